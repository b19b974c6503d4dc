"""Secure by default: the runtime directory is checked, and other users are refused."""

import json
import os
import pwd
import shutil
import subprocess
import tempfile
import time

import pexpect
import pytest
from conftest import PYTHON
from harness import files_under, target, wait_until

from autodbg import crashes, stacks

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
    cli = subprocess.run(
        ["autodbg", "ls"], env=env, capture_output=True, text=True, timeout=30, check=False
    )
    assert (
        cli.returncode == 1 and "is a symlink" in cli.stderr and len(cli.stderr.splitlines()) == 1
    )


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
            30,
            "the session's socket",
        )
        nc = spawn(f"nc -U {sockets[0]}", env)
        nc.expect(f"autodbg: refused: uid 0 may not attach to a session of uid {other_user.pw_uid}")
        nc.expect(pexpect.EOF)
        proc.wait_for(f"refused a client of uid 0 on {sockets[0]}")
        assert proc.popen.poll() is None  # the session still waits for its owner
    finally:
        shutil.rmtree(runtime_dir, ignore_errors=True)


def dead_pid():
    """Return the pid of a process that has ended and been reaped."""
    proc = subprocess.Popen(["true"])
    proc.wait(30)
    return proc.pid


def write_json(path, data, header=False):
    with open(path, "w") as out:
        out.write(json.dumps(data).ljust(stacks.HEADER - 1) + "\n" if header else json.dumps(data))
    return str(path)


def test_a_shared_runtime_dir_keeps_other_hosts_files_and_paths_outside(
    env, runtime_dir, start, tmp_path
):
    # AUTODBG_DIR on an NFS home that other hosts use too: their records, sockets,
    # stack files and crash records are theirs, whatever their pids look like here.
    # And a path a record names outside its job folder is not autodbg's to remove.
    here, there = os.uname().nodename, "elsewhere-node-7"
    folder = os.path.join(runtime_dir, "shared")
    crashes_dir = os.path.join(runtime_dir, "crashes", "shared")
    os.makedirs(folder, mode=0o700)
    os.makedirs(crashes_dir, mode=0o700)
    os.chmod(os.path.dirname(crashes_dir), 0o700)
    theirs, mine, mine_outside = dead_pid(), dead_pid(), dead_pid()
    record = {
        "job": "shared",
        "rank": None,
        "state": "waiting",
        "exception": "E",
        "where": "x:1 in f",
        "started": time.time(),
        "process_started": 1.0,
    }
    important = tmp_path / "important"
    important.write_text("keep me")

    def session(pid, host, socket):
        return write_json(
            os.path.join(folder, f"{pid}.json"), dict(record, pid=pid, host=host, socket=socket)
        )

    keep = [
        session(theirs, there, os.path.join(folder, f"{theirs}.sock")),
        write_json(os.path.join(folder, f"{theirs}.sock"), {}),  # stands for its socket
        write_json(
            os.path.join(folder, f"{theirs}.stack"),
            {"pid": theirs, "host": there, "job": "shared", "signal": 10, "registered": 1.0},
            header=True,
        ),
        str(important),
    ]
    gone = [
        session(mine, here, os.path.join(folder, f"{mine}.sock")),
        write_json(os.path.join(folder, f"{mine}.sock"), {}),
        write_json(
            os.path.join(folder, f"{mine}.stack"),
            {"pid": mine, "host": here, "job": "shared", "signal": 10, "registered": 1.0},
            header=True,
        ),
        session(
            mine_outside, here, str(important)
        ),  # a dead session of this host, naming a file outside
    ]
    # Another host's crash records: more than this host may keep, one past the age bound.
    now = time.time()
    for i in range(crashes.KEEP + 5):
        keep.append(
            write_json(
                os.path.join(crashes_dir, f"20260101T000000.{i:03d}Z-{theirs}.{there}.json"),
                {"pid": theirs, "host": there, "job": "shared", "time": now - 3600 - i},
            )
        )
        os.utime(keep[-1], (now - 3600 - i,) * 2)
    os.utime(keep[-1], (now - crashes.MAX_AGE - 60,) * 2)

    def cli(*args):
        return subprocess.run(
            ["autodbg", *args], env=env, capture_output=True, text=True, timeout=30, check=False
        )

    listed = cli("ls", "--json")
    assert listed.returncode == 0 and json.loads(listed.stdout) == [], listed.stdout + listed.stderr
    assert cli("stack", "--all").returncode == 1  # nothing of this host to ask
    assert cli("attach", str(theirs)).stderr.startswith(
        f"autodbg: no open session for rank or pid {theirs}"
    )
    scan = subprocess.run(
        [PYTHON, "-c", "from autodbg import launcher; print(launcher._sessions())"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert scan.stdout.split() == ["[]"], (
        scan.stdout + scan.stderr
    )  # torchrun's launcher's own scan
    env["AUTODBG_WAIT"] = "0"
    crash = start([PYTHON, target("crash.py")], env)  # its crash record prunes this host's old ones
    assert crash.wait(60) == 1
    assert cli("show", "--list").returncode == 0

    assert [path for path in keep if not os.path.exists(path)] == []
    assert important.read_text() == "keep me"
    assert [path for path in gone if os.path.exists(path)] == []
