"""kill -USR1: every thread's stack on stderr, even while the main thread is blocked in C."""

import os
import signal

from conftest import PYTHON
from harness import target


def test_usr1_dumps_all_threads_while_blocked_in_c(env, start, tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    proc = start([PYTHON, target("blocked.py"), str(fifo)], env)
    proc.wait_for("blocked")
    os.kill(proc.pid, signal.SIGUSR1)
    proc.wait_for("in wait_here", timeout=10)  # faulthandler's C handler, while open() blocks
    assert "in side" in proc.output  # all threads
    os.kill(proc.pid, signal.SIGUSR1)
    proc.wait_for("in wait_here", count=2, timeout=10)
    with open(fifo, "w") as sink:
        sink.write("ok")
    proc.wait_for("released ok")  # the process went on
    assert proc.wait(30) == 0


def test_stack_signal_can_be_changed(env, start, tmp_path):
    env["AUTODBG_STACK_SIGNAL"] = "USR2"
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    proc = start([PYTHON, target("blocked.py"), str(fifo)], env)
    proc.wait_for("blocked")
    os.kill(proc.pid, signal.SIGUSR2)
    proc.wait_for("in wait_here", timeout=10)
    with open(fifo, "w") as sink:
        sink.write("ok")
    assert proc.wait(30) == 0  # the dump only: no live-attach session on the same signal
    assert "the break signal is off" in proc.output and "waiting up to" not in proc.output
