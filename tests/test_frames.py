"""Just my code: a post-mortem session opens at the program's own frame, library frames below.

``AUTODBG_FRAME=innermost`` keeps pdb's frame. A quick case on the console
(json.loads raising in the standard library) and a real torchrun job whose
batch has the wrong shape (torch.nn raising).
"""

import os

import pexpect
import pytest
from conftest import PYTHON
from harness import BIN, plain, target, wait_for_record

AUTODBG = os.path.join(BIN, "autodbg")
PROMPT = r"\(Pdb\)"


def test_opens_at_the_programs_line_with_library_frames_below(env, spawn):
    env["AUTODBG_DEBUGGER"] = "pdb"
    child = spawn(f"{PYTHON} {target('jmc_json.py')}", env)
    child.expect("JSONDecodeError")
    child.expect(
        r"autodbg: opened at jmc_json.py:8, your code; 3 library frames below \(down reaches them\)"
    )
    child.expect(PROMPT)
    assert "return json.loads(text)" in plain(child.before)
    child.sendline("p size")
    child.expect("4")
    child.expect(PROMPT)
    child.sendline("down")
    child.expect(PROMPT)
    assert os.path.join("json", "__init__.py") in plain(child.before)
    child.sendline("up")
    child.sendline("up")
    child.expect("<module>")
    child.expect(PROMPT)
    child.sendline("q")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 1


def test_innermost_keeps_pdbs_frame(env, spawn):
    env.update(AUTODBG_DEBUGGER="pdb", AUTODBG_FRAME="innermost")
    child = spawn(f"{PYTHON} {target('jmc_json.py')}", env)
    child.expect(PROMPT)
    before = plain(child.before)
    assert os.path.join("json", "decoder.py") in before and "opened at" not in before
    child.sendline("q")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 1


def test_a_bad_setting_is_one_warning(env, spawn):
    env.update(AUTODBG_DEBUGGER="pdb", AUTODBG_FRAME="mine")
    child = spawn(f"{PYTHON} {target('jmc_json.py')}", env)
    child.expect("AUTODBG_FRAME='mine' is not valid")
    child.expect("autodbg: opened at jmc_json.py:8")
    child.expect(PROMPT)
    child.sendline("q")
    child.expect(pexpect.EOF)
    child.close()


@pytest.mark.torch
@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.parametrize("choice", ["program", "innermost"])
def test_torchrun_wrong_shape_opens_at_the_users_line(env, runtime_dir, start, spawn, choice):
    pytest.importorskip("torch")
    env["AUTODBG_FRAME"] = choice
    job = start(
        [
            os.path.join(BIN, "torchrun"),
            "--standalone",
            "--nproc_per_node=1",
            target("jmc_train.py"),
        ],
        env,
    )
    record = wait_for_record(runtime_dir, timeout=120, rank=0, state="waiting")
    cli = spawn(f"{AUTODBG} attach 0", env)
    if choice == "program":
        assert record["where"] == f"{target('jmc_train.py')}:15 in train"
        cli.expect(r"autodbg: opened at jmc_train.py:15, your code; \d+ library frames below")
        cli.expect("ipdb>")
        assert "loss = model(batch).sum()" in plain(cli.before)
        cli.sendline("p width")
        cli.expect("3")
        cli.expect("ipdb>")
        cli.sendline("down")
        cli.expect(os.path.join("torch", "nn", "modules", "module.py"))
        cli.expect("ipdb>")
    else:
        assert os.path.join("torch", "nn", "modules", "linear.py") in record["where"]
        cli.expect("ipdb>")
        assert "opened at" not in plain(cli.before)
    cli.sendline("q")
    cli.expect(pexpect.EOF)
    cli.close()
    job.wait(60)
