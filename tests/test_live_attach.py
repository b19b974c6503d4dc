"""Live attach: `autodbg attach <pid>` on a process with no session breaks into it."""

import contextlib
import json
import os
import signal
import subprocess
import time

import pexpect
import pytest
from conftest import PYTHON
from harness import BIN, records, target, wait_until

from autodbg import stacks

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
    proc.wait_for("released")  # resumed where it stopped
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


def run(env, *args):
    return subprocess.run(
        [AUTODBG, *args], env=env, capture_output=True, text=True, timeout=30, check=False
    )


def lives_on(proc, fifo):
    """Tell ``proc`` (no_handler.py, or a shell doing the same) to go on, and check that it did.

    A signal the CLI sent with SIGUSR1's or SIGUSR2's default action would have
    ended it before it read the line: it would never open the FIFO, or end
    with that signal's status.
    """

    def opened():
        try:
            return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:  # ENXIO: no reader (yet, or ever again)
            return None

    fd = wait_until(opened, 10, f"pid {proc.pid} reading {fifo}")
    os.write(fd, b"on\n")
    os.close(fd)
    assert proc.wait(30) == 0, proc.output
    assert "alive on" in proc.output


def test_a_process_without_autodbg_is_left_alone(env, start, tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    env.pop("AUTODBG")
    proc = start([PYTHON, target("no_handler.py"), str(fifo)], env)
    proc.wait_for("ready")
    cli = run(env, "attach", str(proc.pid))
    assert cli.returncode == 1
    assert cli.stderr.startswith(f"autodbg: no open session for rank or pid {proc.pid}")
    lives_on(proc, fifo)  # no break signal was sent: SIGUSR2's default action kills


def fake_stack_file(runtime_dir, pid):
    """Write the stack file that a registered process leaves (autodbg.stacks), naming ``pid``."""
    folder = os.path.join(runtime_dir, "nohandler")
    os.makedirs(folder, mode=0o700, exist_ok=True)
    header = {
        "pid": pid,
        "rank": None,
        "job": "nohandler",
        "host": os.uname().nodename,
        "signal": int(signal.SIGUSR1),
        "main_thread": 1,
        "registered": time.time(),
    }
    with open(os.path.join(folder, f"{pid}.stack"), "w") as out:
        out.write(json.dumps(header).ljust(stacks.HEADER - 1) + "\n")


@pytest.mark.parametrize(
    "command",
    [
        [PYTHON, "-S", target("no_handler.py")],
        ["bash", "-c", 'echo ready; read line < "$0"; echo "alive $line"'],
    ],
    ids=["python-S", "bash"],
)
def test_no_signal_to_a_process_without_autodbgs_handlers(
    env, runtime_dir, start, tmp_path, command
):
    # AUTODBG=1 is in its environment, as in any program of a shell that exported it, but
    # autodbg was never loaded there (`python -S` runs no .pth; bash is no Python): its
    # SigCgt has neither SIGUSR2's nor SIGUSR1's bit.
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    proc = start([*command, str(fifo)], env)
    proc.wait_for("ready")
    attach = run(env, "attach", str(proc.pid))
    assert attach.returncode == 1, attach.stderr
    (line,) = attach.stderr.splitlines()
    assert line.startswith(
        f"autodbg: pid {proc.pid} has no handler for SIGUSR2 (autodbg's break signal)"
    )
    fake_stack_file(runtime_dir, proc.pid)  # as a program that reset SIGUSR1 to its default leaves
    for args in ([str(proc.pid)], ["--all"]):
        out = run(env, "stack", *args)
        assert out.returncode == 1, out.stdout + out.stderr
        assert out.stdout.startswith(f"pid {proc.pid}: no handler for SIGUSR1 installed"), (
            out.stdout
        )
    lives_on(proc, fifo)


@contextlib.contextmanager
def opening(env, start, tmp_path):
    """Start opening_session.py; give it and its command FIFO once its record says "opening"."""
    fifo = tmp_path / "commands"
    os.mkfifo(fifo)
    proc = start([PYTHON, target("opening_session.py"), str(fifo)], env)
    # The FIFO opens when the target reads it, right after it wrote its record.
    with open(fifo, "w", buffering=1) as commands:
        proc.wait_for("opening")
        yield proc, commands


def test_attach_waits_for_an_opening_session_and_never_signals_it(
    env, runtime_dir, start, tmp_path
):
    with opening(env, start, tmp_path) as (proc, commands):
        listed = run(env, "ls")
        assert f" {proc.pid} " in listed.stdout and " opening " in listed.stdout, listed.stdout
        cli = start([AUTODBG, "attach", str(proc.pid)], env)
        cli.wait_for(f"autodbg: pid {proc.pid} is opening its session; waiting up to 10 s for it")
        commands.write("waiting\n")  # the session opened: its socket, its record "waiting"
        assert cli.wait(30) == 0, cli.output
        assert "the stand-in session answered" in cli.output
        commands.write("exit\n")
    assert proc.wait(30) == 0
    assert "alive" in proc.output and "signalled" not in proc.output, proc.output


def test_attach_gives_up_on_a_session_that_stays_opening(env, runtime_dir, start, tmp_path):
    with opening(env, start, tmp_path) as (proc, commands):
        code = "import sys; from autodbg import cli; cli.OPENING_WAIT = 0.5; sys.exit(cli.main())"
        cli = subprocess.run(
            [PYTHON, "-c", code, "attach", str(proc.pid)],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert cli.returncode == 1
        assert cli.stderr.splitlines() == [
            f"autodbg: pid {proc.pid} is opening its session; waiting up to 0.5 s for it",
            (
                f"autodbg: pid {proc.pid} is still opening its session after 0.5 s; "
                "try again, or see where it is with `autodbg stack`"
            ),
        ]
        commands.write("exit\n")
    assert proc.wait(30) == 0
    assert "alive" in proc.output and "signalled" not in proc.output, proc.output


@pytest.mark.torch
@pytest.mark.timeout(240)
def test_attach_by_rank_in_a_torchrun_job(env, runtime_dir, start, spawn):
    pytest.importorskip("torch")
    job = start(
        [
            os.path.join(BIN, "torchrun"),
            "--standalone",
            "--nproc_per_node=2",
            target("rank_loop.py"),
        ],
        env,
    )
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
