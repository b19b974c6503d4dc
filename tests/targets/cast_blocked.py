"""A rank-like process whose main thread waits on a lock in C, with values cast must not change.

It registers for stack dumps itself (``import torch.distributed`` makes a rank do that), so
it is quick to start. ``held``'s repr waits for the lock the main thread holds.
"""
import collections
import os
import threading

import autodbg.stacks

lock = threading.Lock()


class Held:
    def __repr__(self):
        with lock:
            return "Held()"


def wait_here():
    held = Held()
    items = iter([1, 2, 3])
    counts = collections.defaultdict(int, seen=1)
    print(f"pid {os.getpid()} ready", flush=True)
    lock.acquire()  # the main thread holds it already: blocks in C


lock.acquire()
autodbg.stacks.register()
wait_here()
