"""A worker thread raises; the main thread then waits (until a SIGINT ends it with KeyboardInterrupt)."""
import threading
import time


def work():
    mine = "worker"
    raise ValueError(f"failed in {mine}")


threading.Thread(target=work, name="worker").start()
print("main waits", flush=True)
time.sleep(600)
