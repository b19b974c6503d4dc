"""The socket backend with real clients: nc, socat and autodbg attach."""

import os
import subprocess
import time

import pexpect
import pytest
from conftest import PYTHON
from harness import BIN, records, target, wait_for_record

AUTODBG = os.path.join(BIN, "autodbg")


def crashed(start, env, runtime_dir, name="crash.py"):
    proc = start([PYTHON, target(name)], env)
    record = wait_for_record(runtime_dir, pid=proc.pid, state="waiting")
    return proc, record


@pytest.mark.parametrize("client", ["nc -U {}", "socat - UNIX-CONNECT:{}"], ids=["nc", "socat"])
def test_line_client(env, runtime_dir, start, spawn, client):
    proc, record = crashed(start, env, runtime_dir)
    assert record["exception"] == "IndexError: list index out of range"
    assert record["where"] == f"{target('crash.py')}:6 in f"
    assert record["rank"] is None and record["socket"].startswith(runtime_dir)
    assert oct(os.stat(record["socket"]).st_mode & 0o777) == "0o600"
    nc = spawn(client.format(record["socket"]), env)
    nc.expect("ipdb> ")
    nc.sendline("p secret")
    nc.expect("42")
    nc.sendline("up")
    nc.expect("main")
    nc.sendline("q")
    nc.expect(pexpect.EOF)
    assert proc.wait(30) == 1
    assert (
        proc.output.count("IndexError: list index out of range") == 2
    )  # traceback + the waiting line
    assert not os.path.exists(record["socket"])


def test_attach_detach_and_attach_again(env, runtime_dir, start, spawn):
    proc, record = crashed(start, env, runtime_dir)
    cli = spawn(f"{AUTODBG} attach {proc.pid}", env)
    cli.expect("ipdb>")
    cli.sendline("p secret")
    cli.expect("42")
    wait_for_record(runtime_dir, pid=proc.pid, state="attached")

    # A second client is told the session is busy, by the CLI and by the server.
    busy = subprocess.run(
        [AUTODBG, "attach", str(proc.pid)], env=env, capture_output=True, text=True, timeout=30
    )
    assert busy.returncode == 1 and "busy" in busy.stderr and len(busy.stderr.splitlines()) == 1
    nc = subprocess.run(
        ["nc", "-U", record["socket"]], input="", capture_output=True, text=True, timeout=30
    )
    assert "busy" in nc.stdout

    # Ctrl-C interrupts the running debugger command, not the process.
    cli.sendline("!print('run' + 'ning'); import time; time.sleep(30)")
    cli.expect(
        "running"
    )  # the command runs (the echo of the line cannot match); a Ctrl-C before would only clear the line
    cli.sendcontrol("c")
    cli.expect("KeyboardInterrupt")
    cli.expect("ipdb>")
    assert proc.popen.poll() is None

    # Tab completion works: the client is on a real pty.
    cli.send("secr\t")
    cli.expect("secret")
    cli.send("\r")
    cli.expect("42")
    cli.expect("ipdb>")

    cli.sendcontrol("d")
    cli.expect("detached")
    cli.expect(pexpect.EOF)
    cli.close()
    assert cli.exitstatus == 0
    wait_for_record(runtime_dir, pid=proc.pid, state="waiting")

    nc = spawn(f"nc -U {record['socket']}", env)
    nc.expect("ipdb> ")
    nc.sendline("p secret + 1")
    nc.expect("43")
    nc.sendline("q")
    nc.expect(pexpect.EOF)
    assert proc.wait(30) == 1


def test_attach_with_pdb(env, runtime_dir, start, spawn):
    env["AUTODBG_DEBUGGER"] = "pdb"
    proc, _ = crashed(start, env, runtime_dir)
    cli = spawn(f"{AUTODBG} attach {proc.pid}", env)
    cli.expect(r"\(Pdb\)")
    cli.sendline("p secret")
    cli.expect("42")
    cli.sendline("q")
    cli.expect(pexpect.EOF)
    assert proc.wait(30) == 1


def test_no_client_exits_like_python(env, runtime_dir, start):
    env["AUTODBG_WAIT"] = "2"
    without = {k: v for k, v in env.items() if k != "AUTODBG"}
    reference = start([PYTHON, target("crash.py")], without)
    status = reference.wait(30)
    began = time.monotonic()
    proc = start([PYTHON, target("crash.py")], env)
    assert proc.wait(30) == status == 1
    assert time.monotonic() - began < 10
    ours = [line for line in proc.output.splitlines() if not line.startswith("autodbg:")]
    assert ours == reference.output.splitlines()
    assert "no debugger attached within 2 s" in proc.output
    assert records(runtime_dir) == []


def test_wait_zero_does_not_wait(env, runtime_dir, start):
    env["AUTODBG_WAIT"] = "0"
    proc = start([PYTHON, target("crash.py")], env)
    assert proc.wait(30) == 1
    assert "autodbg:" not in proc.output


def test_thread_exception_holds_exit(env, runtime_dir, start, spawn):
    proc = start([PYTHON, target("thread_crash.py")], env)
    record = wait_for_record(runtime_dir, pid=proc.pid, state="waiting")
    assert record["thread"] == "worker" and record["exception"] == "ValueError: bad answer 42"
    proc.wait_for("main done")
    assert proc.popen.poll() is None  # the session holds interpreter exit
    cli = spawn(f"{AUTODBG} attach {proc.pid}", env)
    cli.expect("ipdb>")
    cli.sendline("p answer")
    cli.expect("42")
    cli.sendline("c")
    cli.expect(pexpect.EOF)
    assert proc.wait(30) == 0  # as Python: a thread's exception does not change the exit status


def test_breakpoint_over_socket(env, runtime_dir, start, spawn):
    proc = start([PYTHON, target("breakpoint_target.py")], env)
    record = wait_for_record(runtime_dir, pid=proc.pid, state="waiting")
    assert record["exception"] is None and record["reason"] == "breakpoint"
    nc = spawn(f"nc -U {record['socket']}", env)
    nc.expect("ipdb> ")
    nc.sendline("counter = 5")
    nc.expect("ipdb> ")
    nc.sendline("c")
    nc.expect(pexpect.EOF)
    proc.wait_for("after breakpoint 5")
    assert proc.wait(30) == 0


def test_attach_errors_are_one_line(env, runtime_dir):
    missing = subprocess.run(
        [AUTODBG, "attach", "99"], env=env, capture_output=True, text=True, timeout=30
    )
    assert missing.returncode == 1
    assert missing.stderr.splitlines() == [
        "autodbg: no open session for rank or pid 99; `autodbg ls` lists the open ones"
    ]
    usage = subprocess.run(
        [AUTODBG, "attach", "one"], env=env, capture_output=True, text=True, timeout=30
    )
    assert usage.returncode == 2
    listing = subprocess.run([AUTODBG, "ls"], env=env, capture_output=True, text=True, timeout=30)
    assert listing.returncode == 0 and listing.stdout.strip() == "no open sessions"


def test_dead_process_record_is_cleaned(env, runtime_dir, start):
    proc, record = crashed(start, env, runtime_dir)
    proc.kill()
    assert records(runtime_dir) == []
    assert not os.path.exists(record["socket"])
