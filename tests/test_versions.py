"""Python 3.10+ beyond the default 3.11: a crash opens pdb on a terminal and a socket session."""

import glob
import os
import shutil
import subprocess

import pexpect
import pytest
from harness import files_under, target, wait_until

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def interpreter(name):
    """Return a working ``name`` (e.g. python3.12): on PATH, else in pyenv's versions; or None."""
    version = name.removeprefix("python")
    candidates = [shutil.which(name)] + sorted(
        glob.glob(os.path.expanduser(f"~/.pyenv/versions/{version}*/bin/{name}"))
    )
    for candidate in filter(None, candidates):
        # A pyenv shim is on PATH even when its version is not selected, and then fails.
        if (
            subprocess.run([candidate, "-c", "pass"], capture_output=True, timeout=60).returncode
            == 0
        ):
            return candidate
    return None


@pytest.fixture(scope="module", params=["python3.10", "python3.12", "python3.13"])
def other_python(request, tmp_path_factory):
    """A fresh venv of another Python with autodbg and psutil (pdb: ipdb is not needed here)."""
    base = interpreter(request.param)
    if base is None:
        pytest.skip(f"{request.param} is not installed")
    venv = tmp_path_factory.mktemp(request.param) / "venv"
    subprocess.run([base, "-m", "venv", str(venv)], check=True, timeout=120)
    python = str(venv / "bin" / "python")
    subprocess.run(
        [python, "-m", "pip", "install", "-q", "--no-deps", REPO], check=True, timeout=240
    )
    subprocess.run([python, "-m", "pip", "install", "-q", "psutil"], check=True, timeout=240)
    return python


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_console_and_socket_sessions(other_python, env, runtime_dir, spawn):
    env["AUTODBG_DEBUGGER"] = "pdb"
    child = spawn(f"{other_python} {target('crash.py')}", env)
    child.expect(r"\(Pdb\)")
    child.sendline("p secret")
    child.expect("42")
    child.sendline("q")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 1

    proc = spawn(f"bash -c '{other_python} {target('crash.py')} < /dev/null 2>&1 | cat'", env)
    proc.expect("waiting up to")
    socket = wait_until(
        lambda: files_under(runtime_dir, lambda name: name.endswith(".sock")),
        30,
        "the session's socket",
    )[0]
    nc = spawn(f"nc -U {socket}", env)
    nc.expect(r"\(Pdb\) ")
    nc.sendline("p secret + 1")
    nc.expect("43")
    nc.sendline("q")
    nc.expect(pexpect.EOF)
    proc.expect(pexpect.EOF)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_held_call_of_the_main_script_returns_a_value(other_python, env, spawn):
    # __main__ targets are found by sys.monitoring on 3.12+ and sys.settrace before;
    # pdb's curframe_locals is a plain attribute from 3.13 on.
    env.update(AUTODBG_DEBUGGER="pdb", AUTODBG_CATCH="__main__:Model.step", RETRY_CALL="method")
    child = spawn(f"{other_python} {target('retry_calls.py')}", env)
    child.expect(r"\(Pdb\)")
    child.sendline("up")
    child.expect(r"\(Pdb\)")
    child.sendline("return x * 10 + 2")
    child.expect("result 42")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
