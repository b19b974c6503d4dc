"""autodbg attach as people and scripts use it: typed ahead, piped input, -c commands."""

import os
import subprocess

import pexpect
from conftest import PYTHON
from harness import BIN, target, wait_for_record

AUTODBG = os.path.join(BIN, "autodbg")


def crashed(start, env, runtime_dir):
    proc = start([PYTHON, target("crash.py")], env)
    return proc, wait_for_record(runtime_dir, pid=proc.pid, state="waiting")


def attach(env, pid, *arguments, stdin=None):
    """Run ``autodbg attach PID ARGUMENTS`` to its end; return the completed process."""
    return subprocess.run(
        [AUTODBG, "attach", str(pid), *arguments],
        input=stdin,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_command_typed_before_the_prompt_is_answered(env, runtime_dir, start, spawn):
    proc, _ = crashed(start, env, runtime_dir)
    cli = spawn(f"{AUTODBG} attach {proc.pid}", env)
    cli.send("p secret * 1111\r")  # at once: before the handshake is answered or the prompt drawn
    cli.expect("46662", timeout=20)
    cli.sendline("q")
    cli.expect(pexpect.EOF)
    assert proc.wait(30) == 1


def test_piped_commands_get_plain_answers(env, runtime_dir, start):
    proc, _ = crashed(start, env, runtime_dir)
    out = attach(env, proc.pid, stdin="p secret * 1111\nq\n")
    assert out.returncode == 0, out.stderr
    assert "46662" in out.stdout and "\x1b" not in out.stdout, out.stdout
    assert proc.wait(30) == 1  # the piped `q` ended the session


def test_c_runs_commands_and_detaches(env, runtime_dir, start):
    proc, _ = crashed(start, env, runtime_dir)
    out = attach(env, proc.pid, "-c", "p secret", "-c", "w")
    assert out.returncode == 0, out.stderr
    assert "42" in out.stdout and "main()" in out.stdout and "\x1b" not in out.stdout, out.stdout
    wait_for_record(runtime_dir, pid=proc.pid, state="waiting")  # still there for the next client
    out = attach(env, proc.pid, "-c", "q")
    assert out.returncode == 0, out.stderr
    assert proc.wait(30) == 1


def test_c_on_a_gone_session_is_one_line_and_status_1(env, runtime_dir, start):
    proc, _ = crashed(start, env, runtime_dir)
    attach(env, proc.pid, "-c", "q")
    assert proc.wait(30) == 1
    out = attach(env, proc.pid, "-c", "p 1")
    assert out.returncode == 1 and len(out.stderr.splitlines()) == 1, out.stderr
