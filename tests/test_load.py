"""Load: 32 processes of one job crash at the same instant, each into a socket session.

All 32 sessions must be listed (by ``registry.sessions``, what ``autodbg ls``
reads, by ``autodbg ls`` itself and by ``autodbg web``'s page), each must be
attachable in turn by its rank, answer ``p x`` with its own value, and after ``q`` end with the
exit status Python gives an uncaught exception. The ranks are plain Python
programs (tests/targets/load_crash.py), not torch ranks (32 torch imports do
not fit a small machine), with torchrun's variables so that they form one
32-rank job. benchmarks/listed.py times the same crash-to-listed path.
"""

import json
import os
import re
import signal
import subprocess
import sys

import psutil
import pytest
from harness import BIN, target, wait_until
from webpage import DashboardPage, cookie, websocket

from autodbg import registry

RANKS = 32
JOB = "load32"


def waiting(runtime_dir):
    """This job's records in state waiting, by rank."""
    return {
        r["rank"]: r
        for r in registry.sessions(runtime_dir)
        if r.get("job") == JOB and r["state"] == "waiting"
    }


def autodbg(env, *args):
    return subprocess.run(
        [os.path.join(BIN, "autodbg"), *args], env=env, capture_output=True, text=True, timeout=60
    )


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_32_crash_at_once(start, env, runtime_dir, tmp_path):
    release = str(tmp_path / "release")
    os.mkfifo(release, 0o600)
    # Held open until the release, so that a rank's open() never waits for a writer.
    writer = os.open(release, os.O_RDWR)
    env.update(AUTODBG_MODE="socket", AUTODBG_WAIT="120", TORCHELASTIC_RUN_ID=JOB)
    procs = []
    try:
        for rank in range(RANKS):
            rank_env = dict(env, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(RANKS))
            procs.append(start([sys.executable, target("load_crash.py"), release], rank_env))
        for proc in procs:
            proc.wait_for("ready", timeout=60)
    finally:
        os.close(writer)  # every rank reads the end of file now: all crash at once

    def all_listed():
        found = waiting(runtime_dir)
        return found if len(found) == RANKS else None

    listed = wait_until(all_listed, 60, f"{RANKS} sessions in state waiting")
    assert sorted(listed) == list(range(RANKS))
    assert {r["pid"] for r in listed.values()} == {p.pid for p in procs}
    assert all(
        r["world_size"] == RANKS and "load crash at" in r["exception"] for r in listed.values()
    )

    out = autodbg(env, "ls", "--json")
    assert out.returncode == 0, out.stderr
    assert sorted(r["rank"] for r in json.loads(out.stdout)) == list(range(RANKS))
    table = autodbg(env, "ls")
    assert table.returncode == 0, table.stderr
    for proc in procs:
        assert str(proc.pid) in table.stdout, table.stdout

    # The dashboard lists them all too, over its websocket as its page gets them.
    web = start([os.path.join(BIN, "autodbg"), "web"], env)
    web.wait_for("?token=")
    port, token = re.search(r"open http://127\.0\.0\.1:(\d+)/\?token=(\S+)", web.output).groups()
    with websocket(int(port), cookie(int(port), token)) as ws:
        page = DashboardPage(ws)
        page.until(lambda: page.ranks() == set(range(RANKS)), f"{RANKS} sessions on the page")
        assert {s["pid"] for s in page.table["sessions"]} == {p.pid for p in procs}
    web.popen.send_signal(signal.SIGINT)
    assert web.wait(10) == 0

    for rank, proc in enumerate(procs):
        out = autodbg(env, "attach", str(rank), "-c", "p x", "-c", "q")
        assert out.returncode == 0, f"rank {rank}: {out.stdout}{out.stderr}"
        assert f"ipdb> {7 * rank + 1}\n" in out.stdout, f"rank {rank}: {out.stdout}"
        assert proc.wait(30) == 1, proc.output  # the exit status of an uncaught exception
        assert proc.output.count("Traceback (most recent call last)") == 1, proc.output
        # The others still wait, listed, while one after another is attached and ends.
        assert sorted(waiting(runtime_dir)) == list(range(rank + 1, RANKS))


def test_process_started_is_psutils():
    """A session's record says when its process started without psutil, to psutil's value."""
    for pid in (os.getpid(), os.getppid(), 1):
        assert registry.process_started(pid) == psutil.Process(pid).create_time()
    assert (
        registry.process_started(2**22 + 1) is None
    )  # above the kernel's pid_max: never a process
