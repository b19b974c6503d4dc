"""Registers its stack file as `import torch` makes a rank do, with a fault injected into
autodbg's stack-dump thread (autodbg-stacks): argv[1] "locals" makes its answer to
`autodbg stack --locals` raise, "loop" makes its copy loop raise. The main thread then
waits in C (a lock) for ever."""

import os
import sys
import threading

import autodbg.stacks


def injected(value):
    raise RuntimeError("injected fault")


if sys.argv[1] == "locals":
    autodbg.stacks.short_repr = injected
autodbg.stacks.register()
if sys.argv[1] == "loop":
    autodbg.stacks.COPY_POLL = "no number"  # the thread's next time.sleep raises TypeError
print(f"pid {os.getpid()} ready", flush=True)


def main_waits(lock):
    lock.acquire()


lock = threading.Lock()
lock.acquire()
main_waits(lock)
