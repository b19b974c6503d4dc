"""Imports ctypes (as torch does), says it is ready, then sleeps: a target for a sibling debugger."""

import ctypes  # noqa: F401
import sys
import time

print("ready", flush=True)
time.sleep(float(sys.argv[1]) if sys.argv[1:] else 60)
