"""torchrun's process with autodbg: it keeps a job alive for a rank's session and hands Ctrl-C to it."""

import os
import termios

import pexpect
import psutil
import pytest

from harness import BIN, target, wait_for_record, wait_until

pytest.importorskip("torch")
pytestmark = [pytest.mark.torch, pytest.mark.timeout(240)]
TORCHRUN = os.path.join(BIN, "torchrun")


def test_worker_exit_does_not_kill_a_rank_in_session(env, runtime_dir, start, spawn):
    job = start([TORCHRUN, "--standalone", "--nproc_per_node=3", target("rank_exits.py")], env)
    record = wait_for_record(runtime_dir, timeout=120, rank=1, state="waiting")
    job.wait_for("rank 2 exits")
    job.wait_for("autodbg: a worker exited, but rank 1 has a debugger session open")
    # Rank 0 (in all_reduce) and rank 1 (in its session) are alive, and rank 1 answers.
    assert psutil.pid_exists(record["pid"])
    nc = spawn(f"nc -U {record['socket']}", env)
    nc.expect("ipdb> ")
    nc.sendline("p marker")
    nc.expect("11")
    nc.sendline("q")
    nc.expect(pexpect.EOF)
    assert job.wait(60) != 0
    # Rank 1 ended with its own status, not torchrun's SIGTERM.
    assert "exitcode  : -15 (pid: %d)" % record["pid"] not in job.output


def test_ctrl_c_interrupts_the_debugger_not_the_job(env, runtime_dir, spawn, tmp_path):
    script = tmp_path / "job.sh"
    command = f"{TORCHRUN} --standalone --nproc_per_node=2 {target('slow_command.py')}"
    script.write_text(f"stty -a > {tmp_path}/before\n{command}\nstty -a > {tmp_path}/after\n")
    job = spawn(f"bash {script}", env, timeout=120)
    job.expect("ipdb>")
    job.sendline("!print('start' + 'ed'); import time; time.sleep(pause)")
    job.expect("started")
    # The command runs: the terminal is back in cooked mode, so Ctrl-C is SIGINT for torchrun.
    wait_until(lambda: termios.tcgetattr(job.child_fd)[3] & termios.ISIG, 10, "the terminal in cooked mode")
    job.sendcontrol("c")
    job.expect("KeyboardInterrupt")
    job.expect("ipdb>")
    job.sendline("p pause + 1")
    job.expect("31")
    job.expect("ipdb>")
    job.sendline("q")
    job.expect(pexpect.EOF, timeout=60)
    assert (tmp_path / "before").read_text() == (tmp_path / "after").read_text()
