"""Live attach: `autodbg attach <pid>` on a process with no session breaks into it."""

import os
import subprocess

import pexpect
import pytest

from conftest import PYTHON
from harness import BIN, records, target

AUTODBG = os.path.join(BIN, "autodbg")


def test_attach_breaks_into_a_running_loop_and_resumes(env, runtime_dir, start, spawn):
    proc = start([PYTHON, target("loop.py")], env)
    proc.wait_for("looping")
    for _ in range(2):  # a second attach works as the first
        cli = spawn(f"{AUTODBG} attach {proc.pid}", env)
        cli.expect("live attach")
        cli.expect("ipdb>")
        cli.sendline("p step > 0")
        cli.expect("True")
        cli.sendline("c")
        cli.expect(pexpect.EOF)
        cli.close()
        assert cli.exitstatus == 0
        assert proc.popen.poll() is None  # resumed, not ended
    assert records(runtime_dir) == []


def attach_to_held(env, start, spawn, fifo):
    """Start held_in_c.py on ``fifo`` and `autodbg attach` it; return both once the CLI says it waits."""
    os.mkfifo(fifo)
    proc = start([PYTHON, target("held_in_c.py"), str(fifo)], env)
    proc.wait_for("held")
    cli = spawn(f"{AUTODBG} attach {proc.pid}", env)
    cli.expect("is not running Python code now")
    return proc, cli


def test_attach_waits_for_a_main_thread_held_in_c(env, runtime_dir, start, spawn, tmp_path):
    fifo = tmp_path / "fifo"
    proc, cli = attach_to_held(env, start, spawn, fifo)
    with open(fifo, "w") as sink:
        sink.write("go")
    cli.expect("ipdb>")
    cli.sendline("up")  # it stops right after the C call returned, in signal.pthread_sigmask
    cli.expect("ipdb>")
    cli.sendline("p fifo.closed")
    cli.expect("True")
    cli.sendline("c")
    cli.expect(pexpect.EOF)
    assert proc.popen.poll() is None


def test_ctrl_c_cancels_the_request(env, runtime_dir, start, spawn, tmp_path):
    fifo = tmp_path / "fifo"
    proc, cli = attach_to_held(env, start, spawn, fifo)
    cli.sendcontrol("c")
    cli.expect("cancelled")
    cli.expect(pexpect.EOF)
    cli.close()
    assert cli.exitstatus == 1
    with open(fifo, "w") as sink:
        sink.write("go")
    # The late signal is dropped: the program runs on with no session.
    proc.wait_for("released")
    assert records(runtime_dir) == []
    assert proc.popen.poll() is None


def test_a_process_without_autodbg_is_left_alone(env, start):
    env.pop("AUTODBG")
    proc = start([PYTHON, target("loop.py")], env)
    proc.wait_for("looping")
    cli = subprocess.run([AUTODBG, "attach", str(proc.pid)], env=env, capture_output=True, text=True, timeout=30)
    assert cli.returncode == 1
    assert cli.stderr.startswith(f"autodbg: no open session for rank or pid {proc.pid}")
    assert proc.popen.poll() is None  # no break signal was sent: SIGUSR2's default action kills


@pytest.mark.torch
@pytest.mark.timeout(240)
def test_attach_by_rank_in_a_torchrun_job(env, runtime_dir, start, spawn):
    pytest.importorskip("torch")
    job = start([os.path.join(BIN, "torchrun"), "--standalone", "--nproc_per_node=2", target("rank_loop.py")], env)
    job.wait_for("rank 1 looping", timeout=120)
    for _ in range(2):
        cli = spawn(f"{AUTODBG} attach 1", env)
        cli.expect("live attach")
        cli.expect("ipdb>")
        cli.sendline("p step > 0, rank")
        cli.expect(r"\(True, 1\)")
        cli.sendline("c")
        cli.expect(pexpect.EOF)
    # Rank 0 waits in all_reduce, a C call: the CLI says so and shows where.
    cli = spawn(f"{AUTODBG} attach 0", env)
    cli.expect("is not running Python code now")
    cli.expect("all_reduce")
    cli.sendcontrol("c")
    cli.expect("cancelled")
    cli.expect(pexpect.EOF)
    assert records(runtime_dir) == []
