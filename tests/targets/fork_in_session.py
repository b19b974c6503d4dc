"""A thread's session has a client, which runs `go.set()`: the main thread then forks a child that raises."""

import multiprocessing
import threading

# Set by the test's client: the fork happens while the thread's debugger is at its prompt.
go = threading.Event()


def crash_thread():
    marker = "thread"
    raise ValueError(f"{marker} failed")


def work():
    value = 7
    return value / 0


if __name__ == "__main__":
    threading.Thread(target=crash_thread, name="crasher").start()
    if not go.wait(60):
        raise TimeoutError("no client ran go.set() within 60 s")
    child = multiprocessing.get_context("fork").Process(target=work)
    child.start()
    child.join()
    print(f"parent: child exit code {child.exitcode}", flush=True)
