"""The post-import hook (in autodbg.hooks) survives a find_spec before the import (issue 7, point 7)."""

import os
import subprocess

import pexpect
from conftest import PYTHON
from harness import BIN, target, wait_for_record

AUTODBG = os.path.join(BIN, "autodbg")


def test_find_spec_before_import_keeps_the_thread_hook(env, runtime_dir, start, spawn):
    env["AUTODBG_MODE"] = "socket"
    proc = start([PYTHON, target("find_spec_thread.py")], env)
    record = wait_for_record(runtime_dir, pid=proc.pid, state="waiting")
    assert record["thread"] == "worker" and record["exception"] == "ValueError: bad answer 42"
    cli = spawn(f"{AUTODBG} attach {proc.pid}", env)
    cli.expect("ipdb>")
    cli.sendline("p answer")
    cli.expect("42")
    cli.sendline("c")
    cli.expect(pexpect.EOF)
    assert proc.wait(30) == 0  # as Python: a thread's exception does not change the exit status
    assert (
        proc.output.count("ValueError: bad answer 42") == 2
    )  # the traceback, once, and the waiting line


def test_manual_import_recipe_runs_the_callback_once(env):
    out = subprocess.run(
        [PYTHON, target("import_recipe.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.splitlines() == [
        "calls 1 same module True",
        "loader SourceFileLoader SourceFileLoader",  # the wrapper never stays on the module
        "works (0.0, 1.0, 1.0)",
    ], out.stdout + out.stderr
    assert out.stderr == ""
