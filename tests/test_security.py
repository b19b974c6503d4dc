"""Secure by default: the runtime directory is checked, and other users are refused."""

import os
import pwd
import shutil
import subprocess
import tempfile

import pexpect
import pytest

from conftest import PYTHON
from harness import files_under, target, wait_until

TEST_USER = "autodbg-test"


def test_world_writable_runtime_dir_is_refused(env, runtime_dir, start):
    os.chmod(runtime_dir, 0o777)
    proc = start([PYTHON, target("crash.py")], env)
    assert proc.wait(30) == 1
    assert f"runtime directory {runtime_dir} is group- or world-writable" in proc.output
    assert "IndexError: list index out of range" in proc.output
    assert os.listdir(runtime_dir) == []


def test_symlinked_runtime_dir_is_refused(env, runtime_dir, start, tmp_path):
    link = tmp_path / "rt"
    link.symlink_to(runtime_dir)
    env["AUTODBG_DIR"] = str(link)
    proc = start([PYTHON, target("crash.py")], env)
    assert proc.wait(30) == 1
    assert f"runtime directory {link} is a symlink" in proc.output
    cli = subprocess.run(["autodbg", "ls"], env=env, capture_output=True, text=True, timeout=30)
    assert cli.returncode == 1 and "is a symlink" in cli.stderr and len(cli.stderr.splitlines()) == 1


def test_runtime_dir_of_another_user_is_refused(env, runtime_dir, start):
    if os.getuid() != 0:
        pytest.skip("needs root to chown a directory to another user")
    os.chown(runtime_dir, 65534, 65534)
    proc = start([PYTHON, target("crash.py")], env)
    assert proc.wait(30) == 1
    assert "belongs to uid 65534" in proc.output


@pytest.fixture
def other_user():
    """A user made for this test (needs root and useradd); the test is skipped otherwise."""
    if os.getuid() != 0 or not shutil.which("useradd"):
        pytest.skip("needs root and useradd to create a second user")
    try:
        pwd.getpwnam(TEST_USER)
    except KeyError:
        subprocess.run(["useradd", "--no-create-home", TEST_USER], check=True, timeout=30)
    return pwd.getpwnam(TEST_USER)


def test_client_of_another_uid_is_refused(env, spawn, start, other_user):
    # The session runs as the test user; the client is root, whom file modes do
    # not stop, so only the server's SO_PEERCRED check can refuse it.
    runtime_dir = tempfile.mkdtemp(prefix="adu-", dir="/tmp")
    os.chown(runtime_dir, other_user.pw_uid, other_user.pw_gid)
    env.update(AUTODBG_DIR=runtime_dir, AUTODBG_DEBUGGER="pdb")
    try:
        uid, gid = str(other_user.pw_uid), str(other_user.pw_gid)
        proc = start([PYTHON, target("as_user.py"), uid, gid], env)
        proc.wait_for("waiting up to")
        sockets = wait_until(
            lambda: files_under(runtime_dir, lambda name: name.endswith(".sock")),
            30, "the session's socket")
        nc = spawn(f"nc -U {sockets[0]}", env)
        nc.expect(f"autodbg: refused: uid 0 may not attach to a session of uid {other_user.pw_uid}")
        nc.expect(pexpect.EOF)
        proc.wait_for(f"refused a client of uid 0 on {sockets[0]}")
        assert proc.popen.poll() is None  # the session still waits for its owner
    finally:
        shutil.rmtree(runtime_dir, ignore_errors=True)
