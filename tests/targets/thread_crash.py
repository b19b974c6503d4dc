"""A worker thread raises; the main thread does not wait for it and prints 'main done'."""
import threading


def work(started):
    answer = 41 + 1
    started.wait()
    raise ValueError(f"bad answer {answer}")


started = threading.Event()
threading.Thread(target=work, args=(started,), name="worker").start()
print("main done", flush=True)
started.set()
