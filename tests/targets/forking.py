"""Registers its stack file as `import torch` makes a rank do, forks a child, and both block in C."""
import os
import threading

import autodbg.stacks

autodbg.stacks.register()


def child_waits(lock):
    lock.acquire()


def parent_waits(lock):
    lock.acquire()


lock = threading.Lock()
lock.acquire()
pid = os.fork()
if pid == 0:
    print(f"child {os.getpid()} ready", flush=True)
    child_waits(lock)
else:
    print(f"parent {os.getpid()} ready", flush=True)
    parent_waits(lock)
