"""Stands for a main thread held in C code that runs no Python (a collective, a kernel):
the break signal is blocked while it waits on the FIFO argv[1], as C code that masks
signals would hold it; then it loops in Python."""
import signal
import time

signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR2})
print("held", flush=True)
with open(__import__("sys").argv[1]) as fifo:
    fifo.read()
signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGUSR2})
print("released", flush=True)
while True:
    time.sleep(0.02)
