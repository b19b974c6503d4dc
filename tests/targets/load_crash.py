"""One rank of a load test: waits for the release, then crashes in f(), whose local `x` is 7 * RANK + 1.

argv[1] is a FIFO whose only writer is the test: the rank prints "ready",
then blocks reading it until the test closes its end, which releases every
rank at the same instant (all readers see the end of file at once). The
exception's message holds time.time() taken just before the raise: the
crash time that the load test and benchmarks/listed.py measure from.
"""

import os
import sys
import time


def f(rank):
    x = 7 * rank + 1
    raise RuntimeError(f"load crash at {time.time():.6f}")


with open(sys.argv[1], "rb") as release:
    print("ready", flush=True)
    release.read(1)
f(int(os.environ["RANK"]))
