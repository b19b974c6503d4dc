"""Re-entry and endings during a session: nested breakpoint(), the break signal while a session
is open, two threads that crash at once, SIGTERM at the prompt, a background job of a shell."""

import os
import signal

import pexpect
from conftest import PYTHON
from harness import BIN, files_under, plain, records, target, wait_for_record, wait_until

AUTODBG = os.path.join(BIN, "autodbg")


def test_nested_breakpoint_from_the_prompt(env, spawn):
    child = spawn(f"{PYTHON} {target('nested_breakpoint.py')}", env)
    child.expect("ValueError: boom 7")
    child.expect("ipdb>")
    child.sendline("p helper()")
    child.expect("nested breakpoint")
    child.expect(r"\(ipdb>\)")
    child.sendline("p inner * 2")
    child.expect("84")
    child.expect(r"\(ipdb>\)")
    child.sendline("c")
    child.expect("43")  # helper() returned to the outer command, which prints its value
    child.expect("ipdb>")
    child.sendline("p value")
    child.expect("7")
    child.expect("ipdb>")
    child.sendline("q")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 1
    assert child.logfile_read.getvalue().count("Traceback (most recent call last)") == 1


def test_nested_breakpoint_over_a_socket_client(env, runtime_dir, start, spawn):
    proc = start([PYTHON, target("nested_breakpoint.py")], env)
    record = wait_for_record(runtime_dir, pid=proc.pid, state="waiting")
    client = spawn(f"nc -U {record['socket']}", env)
    client.expect("ipdb> ")
    client.sendline("p helper()")
    client.expect(r"\(ipdb>\) ")
    client.sendline("q")
    client.expect("43")
    client.expect("ipdb> ")
    client.sendline("q")
    client.expect(pexpect.EOF)
    assert proc.wait(30) == 1


def test_break_signal_while_a_session_waits_and_while_attached(env, runtime_dir, start, spawn):
    proc = start([PYTHON, target("crash.py")], env)
    record = wait_for_record(runtime_dir, pid=proc.pid, state="waiting")
    os.kill(proc.pid, signal.SIGUSR2)
    proc.wait_for("break signal ignored: this process is waiting for a debugger client already")
    client = spawn(f"nc -U {record['socket']}", env)
    client.expect("ipdb> ")
    wait_for_record(runtime_dir, pid=proc.pid, state="attached")
    os.kill(proc.pid, signal.SIGUSR2)
    client.expect("break signal ignored")
    client.sendline("p secret")
    client.expect("42")
    client.sendline("q")
    client.expect(pexpect.EOF)
    assert proc.wait(30) == 1
    assert proc.output.count("Traceback (most recent call last)") == 1


def test_two_threads_crash_at_once(env, runtime_dir, start, spawn):
    env["AUTODBG_MODE"] = "socket"
    proc = start([PYTHON, target("two_threads_crash.py")], env)
    seen = []
    for _ in range(2):
        record = wait_until(
            lambda: next(
                (
                    r
                    for r in records(runtime_dir)
                    if r["state"] == "waiting" and r["thread"] not in seen
                ),
                None,
            ),
            30,
            f"a waiting session of a thread other than {seen}",
        )
        seen.append(record["thread"])
        client = spawn(f"nc -U {record['socket']}", env)
        client.expect("ipdb> ")
        client.sendline("p mine")
        client.expect(record["thread"])
        client.sendline("q")
        client.expect(pexpect.EOF)
    assert sorted(seen) == ["first", "second"]
    assert proc.wait(30) == 0  # thread failures leave the exit status alone, as without autodbg
    assert "main done" in proc.output
    assert proc.output.count("Traceback (most recent call last)") == 2


def test_sigterm_at_the_prompt_ends_the_process(env, runtime_dir, start, spawn):
    proc = start([PYTHON, target("crash.py")], env)
    record = wait_for_record(runtime_dir, pid=proc.pid, state="waiting")
    client = spawn(f"nc -U {record['socket']}", env)
    client.expect("ipdb> ")
    os.kill(proc.pid, signal.SIGTERM)
    client.expect("SIGTERM: this process is being stopped; its debugger session ends")
    client.expect(pexpect.EOF)
    assert proc.wait(30) == -signal.SIGTERM  # as without autodbg: killed by the signal
    left = files_under(runtime_dir, lambda name: True)
    assert left and all(
        path.startswith(os.path.join(runtime_dir, "crashes", "")) for path in left
    ), left


def test_sigterm_while_a_command_floods_the_client(env, runtime_dir, start, spawn):
    # `timeout` or `scancel` while a command prints more than the client reads: the
    # signal arrives in the middle of a write to the client's pty.
    proc = start([PYTHON, target("crash.py")], env)
    wait_for_record(runtime_dir, pid=proc.pid, state="waiting")
    client = spawn(f"{AUTODBG} attach {proc.pid}", env)
    client.expect("ipdb>")
    client.sendline("!for i in range(10**7): print('flood', i)")
    client.expect("flood 1000")
    os.kill(proc.pid, signal.SIGTERM)
    client.expect("SIGTERM: this process is being stopped; its debugger session ends", timeout=60)
    client.expect(pexpect.EOF, timeout=60)
    assert proc.wait(30) == -signal.SIGTERM
    assert "internal error" not in proc.output, proc.output[-2000:]


def test_background_job_of_a_shell_gets_a_socket_session(env, runtime_dir, spawn):
    env["AUTODBG_WAIT"] = "2"
    shell = spawn("bash --norc --noprofile -i", dict(env, PS1="prompt$ "))
    shell.expect_exact("prompt$ ")
    shell.sendline(f"{PYTHON} {target('crash.py')} & wait $!; echo status=$?")
    shell.expect("waiting up to 2 s for a debugger")
    shell.expect("status=1", timeout=30)  # not stopped by SIGTTOU: it ended after AUTODBG_WAIT
    assert "ipdb>" not in plain(shell.logfile_read.getvalue())
    shell.sendline("exit")
    shell.expect(pexpect.EOF)


def test_sigint_from_outside_at_a_socket_prompt_ends_the_session(env, runtime_dir, start, spawn):
    proc = start([PYTHON, target("crash.py")], env)
    record = wait_for_record(runtime_dir, pid=proc.pid, state="waiting")
    client = spawn(f"{AUTODBG} attach {proc.pid}", env)
    client.expect("ipdb>")
    wait_for_record(runtime_dir, pid=proc.pid, state="attached")
    os.kill(proc.pid, signal.SIGINT)
    client.expect("SIGINT: this process is being stopped; its debugger session ends")
    client.expect(pexpect.EOF)
    assert proc.wait(30) == 1  # the crash's own status, as without autodbg
    assert not os.path.exists(record["socket"])


def test_sigint_from_outside_at_a_breakpoint_raises_keyboardinterrupt(
    env, runtime_dir, start, spawn
):
    proc = start([PYTHON, target("breakpoint_target.py")], env)
    record = wait_for_record(runtime_dir, pid=proc.pid, state="waiting")
    client = spawn(f"nc -U {record['socket']}", env)
    client.expect("ipdb> ")
    os.kill(proc.pid, signal.SIGINT)
    client.expect("SIGINT: this process is being stopped")
    client.expect(pexpect.EOF)
    assert proc.wait(30) == -signal.SIGINT  # an uncaught KeyboardInterrupt, as Python ends on one
    assert "KeyboardInterrupt" in proc.output and "after breakpoint 3" not in proc.output
    assert "IPython" not in proc.output  # autodbg's excepthook, not IPython's crash handler


def test_a_crash_after_a_breakpoint_session_gets_its_own_session(env, runtime_dir, start, spawn):
    # ipdb's set-up installs IPython's crash handler as sys.excepthook; autodbg's must stay.
    proc = start([PYTHON, target("breakpoint_then_crash.py")], env)
    record = wait_for_record(runtime_dir, pid=proc.pid, state="waiting", reason="breakpoint")
    client = spawn(f"nc -U {record['socket']}", env)
    client.expect("ipdb> ")
    client.sendline("c")
    client.expect(pexpect.EOF)
    record = wait_for_record(
        runtime_dir, pid=proc.pid, state="waiting", exception="ValueError: failed at step 2"
    )
    client = spawn(f"nc -U {record['socket']}", env)
    client.expect("ipdb> ")
    client.sendline("q")
    client.expect(pexpect.EOF)
    assert proc.wait(30) == 1
    assert (
        proc.output.count("Traceback (most recent call last)") == 1 and "IPython" not in proc.output
    )


def test_main_threads_keyboardinterrupt_ends_a_threads_waiting_session(env, runtime_dir, start):
    proc = start([PYTHON, target("thread_crash_main_waits.py")], env)
    record = wait_for_record(runtime_dir, pid=proc.pid, state="waiting", thread="worker")
    proc.wait_for("main waits")
    os.kill(proc.pid, signal.SIGINT)
    assert proc.wait(20) == -signal.SIGINT  # an uncaught KeyboardInterrupt, as without autodbg
    assert "KeyboardInterrupt in the main thread: the program is ending" in proc.output
    assert not os.path.exists(record["socket"]) and not os.path.exists(
        record["socket"][:-5] + ".json"
    )


def test_a_client_that_vanishes_mid_command_interrupts_it(env, runtime_dir, start, spawn):
    env["AUTODBG_WAIT"] = "2"
    for client in ("nc -U {}", f"{AUTODBG} attach {{pid}}"):
        proc = start([PYTHON, target("crash.py")], env)
        record = wait_for_record(runtime_dir, pid=proc.pid, state="waiting")
        nc = spawn(client.format(record["socket"], pid=proc.pid), env)
        nc.expect("ipdb>")
        nc.sendline("!print('run' + 'ning'); import time; time.sleep(60)")
        nc.expect("running")
        nc.kill(signal.SIGKILL)
        proc.wait_for("no debugger attached within 2 s", timeout=20)  # the wait after the detach
        assert proc.wait(20) == 1
