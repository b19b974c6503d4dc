"""The hang watchdog (AUTODBG_HANG): one dump when the main thread makes no progress, else none."""

import os
import re

import pytest
from conftest import PYTHON
from harness import BIN, Proc, files_under, target, wait_until

TORCHRUN = os.path.join(BIN, "torchrun")


def text_of(path):
    """Return the file's text."""
    with open(path) as source:
        return source.read()


def written(path, *words):
    """Return the file's text once it is complete (a final newline) and has ``words``, else ''."""
    text = text_of(path)
    return text if text.endswith("\n") and all(word in text for word in words) else ""


def test_plain_process_dumps_once(env, runtime_dir, start, tmp_path):
    env["AUTODBG_HANG"] = "1"
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    proc = start([PYTHON, target("blocked.py"), str(fifo)], env)
    proc.wait_for("no progress for 1 s at", timeout=30)
    proc.wait_for("in wait_here")
    dumps = wait_until(
        lambda: files_under(runtime_dir, lambda name: name.startswith("hang-")),
        10,
        "the hang dump file",
    )
    assert "wait_here" in text_of(dumps[0])
    with open(fifo, "w") as sink:
        sink.write("ok")
    proc.wait_for("released ok")
    assert proc.wait(30) == 0
    assert proc.output.count("no progress for") == 1  # once, not every second


@pytest.mark.parametrize("kind, where", [("sleep", "in sleep_forever"), ("lock", "in deadlock")])
def test_blocked_main_thread_is_reported(env, start, kind, where):
    """A sleep that never returns and a lock deadlocked with another thread: no switch, no CPU."""
    env["AUTODBG_HANG"] = "1"
    proc = start([PYTHON, target("hang_kinds.py"), kind], env)
    proc.wait_for(f"{where}; stacks of all threads follow", timeout=30)
    assert "autodbg: no progress for 1 s at " in proc.output, proc.output


def test_loop_reentering_a_sleep_is_no_hang(env, start):
    """The same instruction at every sample, but the thread wakes every 50 ms: progress."""
    env["AUTODBG_HANG"] = "1"
    proc = start([PYTHON, target("hang_kinds.py"), "healthy", "4"], env)
    assert proc.wait(60) == 0, proc.output
    assert "healthy: " in proc.output and "no progress" not in proc.output, proc.output


def test_waiting_session_is_no_hang(env, start):
    """A breakpoint() waiting 3 s for a client stops the main thread on purpose."""
    env.update(AUTODBG_HANG="1", AUTODBG_MODE="socket", AUTODBG_WAIT="3")
    proc = start([PYTHON, target("breakpoint_target.py")], env)
    assert proc.wait(60) == 0, proc.output
    assert "no debugger attached within 3 s" in proc.output and "after breakpoint 3" in proc.output
    assert "no progress" not in proc.output, proc.output


@pytest.mark.parametrize("where", ["loop", "dump"])
def test_internal_error_is_one_line(env, where):
    """A bug in the watchdog's sampling or in its dump: one line; the program goes on and ends."""
    env["AUTODBG_HANG"] = "1"
    proc = Proc([PYTHON, target("hang_fault.py"), where], env)  # not `start`: it fails on this line
    try:
        assert proc.wait(60) == 0, proc.output
    finally:
        proc.kill()
    line = "autodbg: internal error in the hang watchdog: RuntimeError: injected fault"
    assert proc.output.count(line) == 1, proc.output
    assert proc.output.count("autodbg: ") == (2 if where == "dump" else 1), proc.output
    assert "survived" in proc.output and "Traceback" not in proc.output, proc.output


def test_unset_starts_nothing(env, start, tmp_path):
    proc = start(
        [PYTHON, "-c", "import sys, time; time.sleep(1.5); print(sorted(sys.modules))"], env
    )
    assert proc.wait(30) == 0
    assert "autodbg.watchdog" not in proc.output and "no progress" not in proc.output


@pytest.mark.torch
@pytest.mark.slow
@pytest.mark.timeout(180)
def test_rank_blocked_in_collective_is_reported(env, runtime_dir, start):
    """2 ranks: rank 0 waits in all_reduce for rank 1, which never joins (it sleeps elsewhere)."""
    pytest.importorskip("torch")
    env["AUTODBG_HANG"] = "2"
    job = start([TORCHRUN, "--standalone", "--nproc_per_node=2", target("ddp_hang.py")], env)
    job.wait_for("[rank 0] no progress for 2 s at", timeout=120)
    job.wait_for("[rank 1] no progress for 2 s at", timeout=30)
    # Each line is one write, but another rank's stack dump (faulthandler's many small
    # writes) can leave it in the middle of a line of the shared output.
    rank0 = re.search(r"autodbg: \[rank 0\] no progress for [^\n]*", job.output).group()
    rank1 = re.search(r"autodbg: \[rank 1\] no progress for [^\n]*", job.output).group()
    assert "distributed_c10d.py" in rank0 and " in all_reduce;" in rank0, rank0
    assert "ddp_hang.py" in rank1 and " in slow_step;" in rank1, rank1
    own = f"hang-{job.output.split('rank 0 pid ')[1].split()[0]}.txt"  # sync is under all_reduce
    wait_until(
        lambda: [p for p in files_under(runtime_dir, own.__eq__) if written(p, "in sync")],
        30,
        "rank 0's own dump, through sync",
    )
    grouped = wait_until(lambda: files_under(runtime_dir, "hang.txt".__eq__), 30, "hang.txt")
    text = wait_until(lambda: written(grouped[0], "rank"), 30, "hang.txt written")
    assert "slow_step" in text and "sync" in text


@pytest.mark.torch
@pytest.mark.slow
@pytest.mark.timeout(180)
def test_healthy_job_gets_no_report(env, start):
    """2 ranks, 160 steps of a 50 ms sleep and an all_reduce (8 s and more) with AUTODBG_HANG=2.

    Under the old rule (same frame, same instruction) both ranks at the sleep
    line and torchrun's monitor loop were reported.
    """
    pytest.importorskip("torch")
    env["AUTODBG_HANG"] = "2"
    job = start(
        [TORCHRUN, "--standalone", "--nproc_per_node=2", target("ddp_steps.py"), "160"], env
    )
    assert job.wait(150) == 0, job.output
    assert "done: 320" in job.output and "no progress" not in job.output, job.output


@pytest.mark.torch
@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    "launch", [[TORCHRUN], [PYTHON, "-m", "torch.distributed.run"]], ids=["torchrun", "-m"]
)
def test_not_in_torchrun_agent(env, start, launch):
    """The agent sleeps 3 s per monitor round in one call: a watchdog there would report at 1 s."""
    pytest.importorskip("torch")
    env["AUTODBG_HANG"] = "1"
    job = start(
        launch
        + [
            "--standalone",
            "--nproc_per_node=2",
            "--monitor-interval=3",
            target("hang_kinds.py"),
            "healthy",
            "1",
        ],
        env,
    )
    assert job.wait(90) == 0, job.output
    assert job.output.count("healthy: ") == 2 and "no progress" not in job.output, job.output


@pytest.mark.torch
@pytest.mark.slow
@pytest.mark.timeout(240)
def test_deadlocked_job_gets_one_grouped_dump(env, runtime_dir, start):
    pytest.importorskip("torch")
    env["AUTODBG_HANG"] = "3"
    job = start([TORCHRUN, "--standalone", "--nproc_per_node=4", target("ddp_hang.py")], env)
    grouped = wait_until(
        lambda: files_under(runtime_dir, lambda name: name == "hang.txt"),
        120,
        "the job's grouped hang dump",
    )[0]
    text = wait_until(lambda: written(grouped, "rank"), 30, "hang.txt written")
    # Rank 1 is the odd one out, first; ranks 0,2,3 wait together in all_reduce.
    odd, rest = text.index("rank 1"), text.index("ranks 0,2,3")
    assert odd < rest and "slow_step" in text and "sync" in text
    job.kill()
