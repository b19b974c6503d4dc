"""Stack dumps: per-process dump latency (the C path) and `autodbg stack --all` wall time.

Usage: .venv/bin/python benchmarks/stacks.py [--rounds N]

The measured processes are small Python programs, not torch ranks (32 torch
imports would not fit in the development VM's memory): each calls
``autodbg.stacks.register()``, as ``import torch`` makes a rank do, starts
two threads, and blocks its main thread in C (``lock.acquire()``). They get
torchrun's variables (``RANK``, ``WORLD_SIZE``, ``TORCHELASTIC_RUN_ID``), so
``autodbg stack --all`` sees one job of N ranks.

1. Dump latency: ``os.kill`` to the moment the dump is complete in the
   process's stack file, found by polling the file's size without sleeping.
   Goal: under 1 ms median.
2. ``autodbg stack --all`` wall time for 4, 16 and 32 processes, the CLI's own
   start-up included (one CLI process, all requests at once). Goal: under 1 s at 32.
"""

import argparse
import glob
import os
import shutil
import signal
import statistics
import tempfile
import time

from measure import log, start_job, stop_job, time_cli

PROGRAM = """
import threading, autodbg.stacks
autodbg.stacks.register()
for name in ("loader", "logger"):
    threading.Thread(target=threading.Event().wait, name=name, daemon=True).start()
print("ready", flush=True)
lock = threading.Lock(); lock.acquire(); lock.acquire()  # the second blocks in C
"""


def dump_latency(pid, path, rounds):
    """Seconds from the signal to a complete dump, once per round (busy-polls, never sleeps)."""
    times = []
    for _ in range(rounds):
        before = os.path.getsize(path)
        sent = time.perf_counter()
        os.kill(pid, signal.SIGUSR1)
        deadline = sent + 5
        while True:
            size = os.path.getsize(path)
            if size > before:
                with open(path, "rb") as source:
                    source.seek(before)
                    text = source.read()
                if text.endswith(
                    b"in <module>\n"
                ):  # the main thread comes last and ends with the module frame
                    break
            if time.perf_counter() > deadline:
                raise SystemExit(f"no dump from pid {pid} within 5 s")
        times.append(time.perf_counter() - sent)
    return times


def stack_all(runtime_dir, job, rounds):
    return time_cli(["stack", "--all", "--job", job], runtime_dir, rounds)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rounds",
        type=int,
        default=200,
        help="dumps for the latency (default 200); a tenth of that CLI runs per size",
    )
    args = parser.parse_args()
    runtime_dir = tempfile.mkdtemp(prefix="adb-", dir="/tmp")
    try:
        log("dump latency: one process, main thread blocked in C, 3 threads")
        procs = start_job(1, runtime_dir, "latency", ["-c", PROGRAM])
        (path,) = glob.glob(os.path.join(runtime_dir, "latency", "*.stack"))
        times = dump_latency(procs[0].pid, path, args.rounds)
        stop_job(procs)
        ms = sorted(t * 1000 for t in times)
        median = statistics.median(ms)
        print(
            f"per-process dump latency (kill to complete dump in its file), {len(ms)} dumps: "
            f"median {median:.3f} ms, p90 {ms[int(len(ms) * 0.9)]:.3f} ms, max {ms[-1]:.3f} ms; "
            f"goal under 1 ms median: {'met' if median < 1 else 'NOT met'}"
        )
        for count in (4, 16, 32):
            job = f"bench{count}"
            log(f"autodbg stack --all: {count} processes")
            procs = start_job(count, runtime_dir, job, ["-c", PROGRAM])
            try:
                times, text = stack_all(runtime_dir, job, max(3, args.rounds // 10))
            finally:
                stop_job(procs)
            assert text.startswith("ranks 0,1,2,3") and text.count("main thread") == 1, text[
                :500
            ]  # one group
            median = statistics.median(times)
            line = f"autodbg stack --all, {count:2d} processes, {len(times)} runs: median {median:.3f} s, max {max(times):.3f} s"
            if count == 32:
                line += f"; goal under 1 s at 32: {'met' if median < 1 else 'NOT met'}"
            print(line, flush=True)
    finally:
        shutil.rmtree(runtime_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
