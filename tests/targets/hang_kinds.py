"""The main thread hangs, or does not, as argv[1] says:

* ``sleep``: in a sleep that never returns;
* ``lock``: deadlocked with another thread, each holding the lock the other wants;
* ``healthy SECONDS``: a loop whose steps each sleep 50 ms, for SECONDS, then exits 0.
"""
import sys
import threading
import time


def sleep_forever():
    time.sleep(600)


def deadlock():
    first, second = threading.Lock(), threading.Lock()
    both = threading.Barrier(2)

    def other():
        with second:
            both.wait()
            with first:
                pass

    threading.Thread(target=other, name="other", daemon=True).start()
    with first:
        both.wait()
        with second:
            pass


def healthy(seconds):
    end = time.monotonic() + seconds
    steps = 0
    while time.monotonic() < end:
        time.sleep(0.05)
        steps += 1
    print(f"healthy: {steps} steps", flush=True)


print("started", flush=True)
if sys.argv[1] == "sleep":
    sleep_forever()
elif sys.argv[1] == "lock":
    deadlock()
else:
    healthy(float(sys.argv[2]))
