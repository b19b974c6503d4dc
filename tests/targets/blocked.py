"""The main thread blocks in C (open() of the FIFO argv[1]) until the test writes to it."""
import sys
import threading


def wait_here(fifo):
    with open(fifo) as source:
        return source.read()


def side():
    threading.Event().wait(60)


threading.Thread(target=side, name="side", daemon=True).start()
print("blocked", flush=True)
print("released", wait_here(sys.argv[1]), flush=True)
