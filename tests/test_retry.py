"""``retry`` and ``return VALUE`` of a held call (AUTODBG_CATCH, ``@autodbg.catch``) on real processes.

A target's call fails into a socket session with the failing frame alive;
the test edits the program's file while the session waits (a real file in
the test's directory), and ``autodbg attach -c`` types ``reload`` and
``retry``: the program goes on with the call's new value and exits 0, as if
nothing had failed. In a torchrun job, rank 0 waits in its ``all_reduce``
meanwhile and the job completes on both ranks.
"""

import os
import subprocess

import pexpect
import pytest
from conftest import PYTHON
from harness import BIN, records, wait_for_record, wait_until
from test_reload import commands, edit, program

FIX = ("return total / 0  # FIX", "return total * 10")


def held(start, env, runtime_dir, folder, call, catch=None):
    """Run retry_calls.py's ``call`` in ``folder`` until its session waits; return process, path, record."""
    path = program(str(folder), "retry_calls.py")
    settings = dict(env, AUTODBG_MODE="socket", RETRY_CALL=call, AUTODBG_WAIT="600")
    if catch:
        settings["AUTODBG_CATCH"] = catch
    proc = start([PYTHON, path], settings, cwd=os.path.dirname(path))
    return proc, path, wait_for_record(runtime_dir, pid=proc.pid, state="waiting")


def test_reload_then_retry_returns_the_fixed_value_and_the_program_ends_well(
    env, runtime_dir, start, tmp_path
):
    proc, path, record = held(start, env, runtime_dir, tmp_path, "function", "__main__:compute")
    assert record["exception"] == "ZeroDivisionError: division by zero"
    assert record["where"].endswith("retry_calls.py:15 in compute")
    edit(path, FIX)
    out = commands(env, proc.pid, "p total", "reload", "retry")
    assert "5" in out and "retry_calls.py: compute" in out, out
    assert proc.wait(30) == 0
    assert "result 50" in proc.output
    # Printed once, when the call failed, with the frames above the call.
    assert proc.output.count("Traceback (most recent call last)") == 1, proc.output
    assert 'retry_calls.py", line 29, in <module>' in proc.output


def test_return_value_hands_it_to_the_caller_of_a_method(env, runtime_dir, start, tmp_path):
    proc, _, record = held(start, env, runtime_dir, tmp_path, "method", "__main__:Model.step")
    assert record["where"].endswith("in compute")  # the failing frame, below the held method
    out = commands(env, proc.pid, "return", "up", "p x", "return x * 10 + 2")
    assert "return VALUE" in out and "4" in out, out
    assert proc.wait(30) == 0
    assert "result 42" in proc.output


def test_a_retry_that_fails_again_opens_a_new_session_and_q_lets_it_go(
    env, runtime_dir, start, tmp_path
):
    proc, _, first = held(start, env, runtime_dir, tmp_path, "decorated")
    commands(env, proc.pid, "retry")

    def second():
        return [
            r
            for r in records(runtime_dir)
            if r["pid"] == proc.pid and r["state"] == "waiting" and r["started"] > first["started"]
        ]

    wait_until(second, 60, "the retry's session")
    commands(env, proc.pid, "q")
    # No third session at the excepthook (it would wait 600 s for a client), and each
    # failure's traceback is printed once: the last one is not printed again at exit.
    assert proc.wait(30) == 1
    assert proc.output.count("Traceback (most recent call last)") == 2, proc.output
    assert "\nresult " not in proc.output


def test_retry_outside_a_held_call_says_what_it_is_for(env, runtime_dir, start, tmp_path):
    path = program(str(tmp_path), "retry_calls.py")
    settings = dict(env, AUTODBG_MODE="socket", RETRY_CALL="function")
    proc = start([PYTHON, path], settings, cwd=str(tmp_path))
    wait_for_record(runtime_dir, pid=proc.pid, state="waiting")  # the excepthook's session
    out = commands(env, proc.pid, "retry", "return 1", "q")
    assert "only a call of a function named in AUTODBG_CATCH" in out, out
    assert proc.wait(30) == 1
    assert proc.output.count("Traceback (most recent call last)") == 1


def test_without_autodbg_the_decorator_only_calls(env, tmp_path):
    path = program(str(tmp_path), "retry_calls.py")
    settings = {k: v for k, v in env.items() if k != "AUTODBG"}
    out = subprocess.run(
        [PYTHON, path],
        env=dict(settings, RETRY_CALL="decorated"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1
    assert out.stderr.count("Traceback (most recent call last)") == 1
    assert out.stderr.rstrip().endswith("ZeroDivisionError: division by zero")
    assert "autodbg:" not in out.stderr


@pytest.mark.torch
@pytest.mark.slow
@pytest.mark.timeout(240)
def test_torchrun_rank_retries_and_the_job_completes(env, runtime_dir, start, tmp_path):
    pytest.importorskip("torch")
    path = program(str(tmp_path), "retry_ranks.py")
    settings = dict(env, AUTODBG_MODE="socket", AUTODBG_CATCH="__main__:local_loss")
    job = start(
        [os.path.join(BIN, "torchrun"), "--standalone", "--nproc_per_node=2", path],
        settings,
        cwd=str(tmp_path),
    )
    record = wait_for_record(runtime_dir, timeout=120, rank=1, state="waiting")
    assert record["exception"] == "RuntimeError: rank 1 cannot compute its loss"
    edit(path, ('raise RuntimeError("rank 1 cannot compute its loss")  # FIX', "return 10.0"))
    out = commands(settings, "1", "reload", "retry")
    assert "retry_ranks.py: local_loss" in out, out
    assert job.wait(120) == 0, job.output
    assert "rank 0 total 10.0" in job.output and "rank 1 total 10.0" in job.output


def test_on_the_terminal_typed_ahead_return_reaches_the_held_call(env, spawn, tmp_path):
    # A user who knows the fix types it while ipdb is still loading.
    path = program(str(tmp_path), "retry_calls.py")
    env.update(AUTODBG_CATCH="__main__:compute", RETRY_CALL="function")
    child = spawn(f"{PYTHON} {path}", env, cwd=str(tmp_path))
    child.expect("ZeroDivisionError: division by zero")
    child.sendline("return total + 100")
    child.expect("result 105")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
