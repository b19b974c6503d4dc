"""Ends in the way argv[1] names: ``keyboard`` (KeyboardInterrupt), ``exit3`` (SystemExit(3)),
``bdbquit`` (bdb.BdbQuit), ``breakpoint`` (calls breakpoint(), then prints and exits 0)."""

import bdb
import sys


def end(kind):
    if kind == "keyboard":
        raise KeyboardInterrupt
    if kind == "exit3":
        raise SystemExit(3)
    if kind == "bdbquit":
        raise bdb.BdbQuit
    if kind == "breakpoint":
        breakpoint()  # noqa: T100 (PYTHONBREAKPOINT=0 makes it a no-op)
        print("after breakpoint", flush=True)
        return
    raise AssertionError(f"unknown kind {kind!r}")


end(sys.argv[1])
