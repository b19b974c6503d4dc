"""A Python program without autodbg's handlers (run with -S: no site, no autodbg.pth) though
AUTODBG=1 is in its environment: prints "ready", then "alive <line>" once it reads a line
from the FIFO argv[1], and ends with status 0. SIGUSR1 or SIGUSR2 would end it first."""

import sys

print("ready", flush=True)
with open(sys.argv[1]) as fifo:
    print("alive", fifo.readline().strip(), flush=True)
