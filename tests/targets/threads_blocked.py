"""Three named threads (one a daemon) wait on Events while the main thread raises."""

import threading

release = threading.Event()
started = threading.Barrier(4)


def worker(label):
    held = f"held by {label}"  # a local the tests read back in this thread's frame
    started.wait()
    release.wait()
    return held


def main():
    threads = [
        threading.Thread(target=worker, args=(name,), name=name, daemon=(name == "metrics"))
        for name in ("loader", "metrics", "saver")
    ]
    for thread in threads:
        thread.start()
    # Released when the interpreter shuts down, before it joins the non-daemon
    # threads (as concurrent.futures does): once the session ends, they end.
    threading._register_atexit(release.set)
    started.wait()  # every thread is in release.wait() before the failure
    failing = "main's local"
    raise RuntimeError(failing)


if __name__ == "__main__":
    main()
