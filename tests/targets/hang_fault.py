"""Injects a bug into autodbg's hang watchdog (argv[1] says where), then carries on:

* ``loop``: its sampling raises; the main thread then runs 50 ms steps for 1.5 s;
* ``dump``: collecting the job's stacks raises; the main thread sleeps 2.5 s in one call.

Either way the program prints "survived" and exits 0, as without autodbg.
"""
import sys
import time

from autodbg import watchdog


def injected(*args):
    raise RuntimeError("injected fault")


if sys.argv[1] == "loop":
    watchdog._accounting = injected
    end = time.monotonic() + 1.5
    while time.monotonic() < end:
        time.sleep(0.05)
else:
    watchdog._job_stacks = injected
    time.sleep(2.5)
print("survived", flush=True)
