"""Raises with no torch anywhere; at exit prints which heavy modules autodbg's session loaded."""
import atexit
import sys


@atexit.register
def report():
    print("torch loaded:", any(name.split(".")[0] == "torch" for name in sys.modules), flush=True)


raise ValueError("no torch here")
