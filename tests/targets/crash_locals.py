"""Crashes in f(), whose locals test the crash record's bounds.

`raising` has a __repr__ that raises, `long` is a long string, `stuck`
(only with the argument "stuck") has a __repr__ that blocks for a minute,
and the module holds 2,000 globals of 1,000 characters each (about 2 MB
of reprs before the bounds).
"""

import sys
import time


class Raising:
    def __repr__(self):
        raise RuntimeError("no repr for you")


class Stuck:
    def __repr__(self):
        time.sleep(60)
        return "never"


for i in range(2000):
    globals()[f"g{i:04d}"] = "y" * 1000


def f(stuck):
    raising = Raising()
    long = "x" * 1_000_000
    blocker = Stuck() if stuck else None
    answer = 42
    return 1 / 0


f(sys.argv[1:] == ["stuck"])
