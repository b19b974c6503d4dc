"""The console backend under a real pty: the debugger on the process's own terminal."""

import pexpect
import pytest
from conftest import PYTHON
from harness import plain, target


@pytest.mark.parametrize("debugger, prompt", [("ipdb", "ipdb>"), ("pdb", r"\(Pdb\)")])
def test_crash_opens_debugger_on_terminal(env, spawn, debugger, prompt):
    env["AUTODBG_DEBUGGER"] = debugger
    child = spawn(f"{PYTHON} {target('crash.py')}", env)
    child.expect("IndexError: list index out of range")
    child.expect(prompt)
    assert "return items[5]" in plain(child.before)  # the failing line is shown
    child.sendline("p secret")
    child.expect("42")
    child.expect(prompt)
    child.sendline("up")
    child.expect("main")
    child.expect(prompt)
    child.sendline("q")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 1
    assert child.logfile_read.getvalue().count("Traceback (most recent call last)") == 1


def test_breakpoint_stops_and_continues(env, spawn):
    child = spawn(f"{PYTHON} {target('breakpoint_target.py')}", env)
    child.expect("ipdb>")
    child.sendline("p counter * 2")
    child.expect("6")
    child.expect("ipdb>")
    child.sendline("c")
    child.expect("after breakpoint 3")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_terminal_modes_restored(env, spawn, tmp_path):
    script = tmp_path / "run.sh"
    script.write_text(
        f"stty -a > {tmp_path}/before\n{PYTHON} {target('crash.py')}\nstty -a > {tmp_path}/after\n"
    )
    child = spawn(f"bash {script}", env)
    child.expect("ipdb>")
    child.sendline("q")
    child.expect(pexpect.EOF)
    assert (tmp_path / "before").read_text() == (tmp_path / "after").read_text()
