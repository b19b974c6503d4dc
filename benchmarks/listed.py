"""Crash to listed session: from the raise to the session's record listed, 1 process and 32 at once.

Usage: .venv/bin/python benchmarks/listed.py [--rounds N]

Each round starts N small Python programs (not torch ranks: 32 torch imports
would not fit in the development VM's memory) with ``AUTODBG=1
AUTODBG_MODE=socket`` and torchrun's variables (``RANK``, ``WORLD_SIZE``,
``TORCHELASTIC_RUN_ID``), so that they form one N-rank job, in a fresh
runtime directory. Each blocks reading a FIFO whose only writer is this
benchmark; closing it releases all N at the same instant, and each raises,
its message holding ``time.time()`` taken just before the raise: the crash
time. This process then calls ``registry.sessions()`` (what ``autodbg ls``
reads) every 0.5 ms and notes when each record is first listed, in
state ``opening`` and in state ``waiting`` (its socket open: attachable).

Where the time goes, per process, from the times the records hold:

1. raise to session: the excepthook, triage, and importing the session's
   modules (``traceback``, ``json``, ``socket``, ``threading``...) up to the
   session's ``started`` time;
2. session to crash record: the record published in state ``opening``, the
   socket client's set-up, up to the crash record's ``time``;
3. crash record to listed: the crash record (the traceback as Python prints
   it, the locals' reprs on a thread, the file), the session's socket, the
   record published in state ``waiting``, and this poller's latency (one
   ``registry.sessions()`` call, also shown).

And the CPU time that a crash costs its process's main thread until it is
listed (``/proc/<pid>/schedstat``; the reprs' short-lived thread is not in
it): the figure that does not depend on the machine's load. 32 crashes at
once share the cores, so their latency is about 32 times that over the
number of cores. A third column preloads the standard library modules that
the crash path imports and that a torch rank has loaded already
(:data:`PRELOAD`), as in a real job.

The debugger (ipdb) is imported only when a client attaches, after the
record says ``waiting`` (``autodbg.session.post_mortem``: the debugger is
created once ``Clients.first()`` returned a client), so none of this holds
it; its import time in a fresh interpreter is shown beside, for scale.
Last, ``autodbg ls --json`` run in a loop, as a user would: from the first
raise to the end of the first run that lists all 32 waiting, the CLI's
start-up included. Goal: crash to listed (waiting) under 100 ms median.
"""

import argparse
import glob
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from measure import clean_env, log, start_job, stop_job

from autodbg import registry

POLL = 0.0005  # seconds between two listings: finer than the figures, and leaves the CPU to them
AUTODBG = os.path.join(os.path.dirname(sys.executable), "autodbg")
# The standard library modules a crash imports that `import torch` has loaded already
# (checked with torch 2.13): in a torch rank, a crash imports autodbg's own modules only.
PRELOAD = "import ast, json, signal, socket, threading, traceback\n"
PROGRAM = """
import sys, time
def f():
    x = 42
    raise RuntimeError(f"crash at {time.time():.6f}")
with open(sys.argv[1], "rb") as release:
    print("ready", flush=True)
    release.read(1)
f()
"""


def one_round(count, preload, with_cli):
    """Crash ``count`` processes at once; return per-process phases (seconds) and round figures.

    Args:
        count (int): processes.
        preload (bool): they import :data:`PRELOAD` first.
        with_cli (bool): list with ``autodbg ls --json`` runs instead of ``registry.sessions()``.
    """
    root = tempfile.mkdtemp(prefix="adb-", dir="/tmp")
    job = f"listed{count}"
    release = os.path.join(root, "release")
    os.mkfifo(release, 0o600)
    writer = os.open(release, os.O_RDWR)  # so that no process's open() waits for a writer
    program = [*(["-c", PRELOAD + PROGRAM] if preload else ["-c", PROGRAM]), release]
    procs = start_job(count, root, job, program, AUTODBG_MODE="socket", AUTODBG_WAIT="600")
    seen = {}  # (pid, state) -> first time listed
    polls = []
    cli = []
    try:
        cpu = {proc.pid: cpu_seconds(proc.pid) for proc in procs}  # all blocked on the FIFO
        os.close(writer)
        deadline = time.time() + 60
        while sum(state == "waiting" for _, state in seen) < count:
            if with_cli:
                out = subprocess.run(
                    [AUTODBG, "ls", "--json"],
                    env=dict(clean_env(), AUTODBG_DIR=root),
                    capture_output=True,
                    text=True,
                )
                now = time.time()
                found = json.loads(out.stdout or "[]")
                cli.append(now)
            else:
                time.sleep(POLL)
                began = time.perf_counter()
                found = registry.sessions(root)
                polls.append(time.perf_counter() - began)
                now = time.time()
            for record in found:
                if (record["pid"], record["state"]) not in seen:
                    seen[(record["pid"], record["state"])] = now
                    if record["state"] == "waiting":
                        cpu[record["pid"]] = cpu_seconds(record["pid"]) - cpu[record["pid"]]
            if time.time() > deadline:
                raise SystemExit(f"not all {count} sessions listed within 60 s")
        records = {r["pid"]: r for r in found}  # the last listing: all waiting
        crash_records = {}
        for path in glob.glob(os.path.join(root, "crashes", job, "*.json")):
            with open(path) as source:
                data = json.load(source)
            crash_records[data["pid"]] = data["time"]
    finally:
        stop_job(procs)
        shutil.rmtree(root, ignore_errors=True)
    phases = []
    crashes = {pid: float(r["exception"].rsplit(" ", 1)[1]) for pid, r in records.items()}
    for pid, record in records.items():
        crashed = crashes[pid]
        waiting = seen[(pid, "waiting")]
        phases.append(
            {
                "listed": waiting - crashed,
                "opening": seen.get((pid, "opening"), waiting) - crashed,
                "session": record["started"] - crashed,
                "crash record": crash_records[pid] - record["started"],
                "to listed": waiting - crash_records[pid],
                "cpu": cpu[pid],
            }
        )
    last = max(seen[(pid, "waiting")] for pid in records) - min(crashes.values())
    return phases, {"polls": polls, "last": last, "cli_runs": len(cli)}


def cpu_seconds(pid):
    """The CPU time of process ``pid``'s main thread, in seconds (the kernel's ``schedstat``, ns)."""
    with open(f"/proc/{pid}/schedstat") as source:
        return int(source.read().split()[0]) / 1e9


def ms(values):
    ordered = sorted(values)
    return (
        statistics.median(ordered) * 1000,
        ordered[int(0.9 * (len(ordered) - 1))] * 1000,
    )


def ipdb_import(rounds):
    code = "import time; t = time.perf_counter(); import ipdb; print(time.perf_counter() - t)"
    return [
        float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout)
        for _ in range(rounds)
    ]


COLUMNS = (  # title, processes, preload the stdlib modules a torch rank has
    ("1 process", 1, False),
    ("32 at once", 32, False),
    ("32, torch's modules", 32, True),
)
ROWS = (
    ("raise -> listed, state waiting", "listed"),
    ("raise -> listed, state opening", "opening"),
    ("  1. raise -> session started", "session"),
    ("  2. session -> crash record begun", "crash record"),
    ("  3. crash record -> listed waiting", "to listed"),
    ("CPU of a crash, raise -> listed", "cpu"),
)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rounds",
        type=int,
        default=20,
        help="rounds of one process (default 20); a sixth of that (at least 2) of 32 at once",
    )
    args = parser.parse_args()
    results = []
    for title, count, preload in COLUMNS:
        rounds = args.rounds if count == 1 else max(2, args.rounds // 6)
        phases, polls, lasts = [], [], []
        for n in range(rounds):
            log(f"{title}: round {n + 1}/{rounds}")
            round_phases, figures = one_round(count, preload, with_cli=False)
            phases += round_phases
            polls += figures["polls"]
            lasts.append(figures["last"])
        results.append((f"{title}, {len(phases)}", phases, polls, lasts))
    log("autodbg ls --json in a loop until it lists all 32")
    _, cli = one_round(32, False, with_cli=True)
    log("import ipdb in a fresh interpreter")
    ipdb = ipdb_import(3)

    print(f"{'crash to listed session, ms':<38}" + "".join(f"{r[0]:>24}" for r in results))
    print(f"{'':<38}" + f"{'median':>12}{'p90':>12}" * len(results))

    def row(name, series, digits=1):
        cells = "".join(f"{m:12.{digits}f}{p:12.{digits}f}" for m, p in map(ms, series))
        print(f"{name:<38}{cells}")

    for name, key in ROWS:
        row(name, [[p[key] for p in r[1]] for r in results])
    row("poll: one registry.sessions() call", [r[2] for r in results], 2)
    row("first raise -> last listed, a round", [r[3] for r in results])
    print(
        f"autodbg ls --json in a loop, first raise -> end of the first run listing all 32 "
        f"waiting: {cli['last'] * 1000:.0f} ms ({cli['cli_runs']} runs)"
    )
    print(
        f"not included (imported when a client attaches): import ipdb, median of "
        f"{len(ipdb)}: {statistics.median(ipdb) * 1000:.0f} ms"
    )
    for title, phases, _, _ in results:
        median = ms([p["listed"] for p in phases])[0]
        print(
            f"goal under 100 ms median, {title.rsplit(',', 1)[0]}: "
            f"{'met' if median < 100 else 'NOT met'} ({median:.1f} ms)"
        )


if __name__ == "__main__":
    main()
