"""Asks importlib.util.find_spec("threading") before importing it, then a thread raises.

The find_spec is what a program does to check that a module is there; autodbg's
post-import hook must still patch threading.excepthook at the import that follows.
"""
import importlib.util
import sys

assert "threading" not in sys.modules, "threading was imported at start-up"
assert importlib.util.find_spec("threading") is not None
import threading


def work():
    answer = 41 + 1
    raise ValueError(f"bad answer {answer}")


threading.Thread(target=work, name="worker").start()
