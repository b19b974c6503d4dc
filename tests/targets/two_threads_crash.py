"""Two threads raise at the same moment (a barrier); the main thread joins them and prints 'main done'."""
import threading

barrier = threading.Barrier(2)


def work(name):
    mine = name
    barrier.wait()
    raise ValueError(f"failed in {mine}")


threads = [threading.Thread(target=work, args=(name,), name=name) for name in ("first", "second")]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
print("main done", flush=True)
