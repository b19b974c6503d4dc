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


FORGED_CLIENT = """
import json, sys
from autodbg import client
try:
    client.attach(json.loads(sys.argv[1]), ["p 1"])
except client.AttachError as error:
    sys.exit(f"autodbg: {error}")
"""


@pytest.mark.parametrize("forgery", ["another user's socket", "outside", "symlink to outside"])
def test_a_forged_record_is_refused_by_the_client(env, runtime_dir, start, forgery):
    # A record is data: whoever wrote it, the client connects only to the session's own
    # socket, <pid>.sock of this user in a job folder of the runtime directory.
    if forgery == "another user's socket" and os.getuid() != 0:
        pytest.skip("needs root to chown a socket to another user")
    import socket

    import psutil

    sleeper = start(["sleep", "120"], env)  # a live process for the record to name
    folder = os.path.join(runtime_dir, "forged")
    os.mkdir(folder, 0o700)
    outside = tempfile.mkdtemp(prefix="adf-", dir="/tmp")
    try:
        own_name = os.path.join(folder, f"{sleeper.pid}.sock")
        if forgery == "another user's socket":
            path = bound = own_name
        else:
            bound = os.path.join(outside, f"{sleeper.pid}.sock")
            path = bound if forgery == "outside" else own_name
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(bound)
        listener.listen(1)
        listener.setblocking(False)
        if forgery == "another user's socket":
            os.chown(bound, 65534, 65534)
        else:
            if path != bound:
                os.symlink(bound, path)
        record = {
            "pid": sleeper.pid,
            "rank": None,
            "host": os.uname().nodename,
            "job": "forged",
            "state": "waiting",
            "socket": path,
            "exception": "E",
            "where": "x:1 in f",
            "started": time.time(),
            "process_started": psutil.Process(sleeper.pid).create_time(),
        }
        write_json(os.path.join(folder, f"{sleeper.pid}.json"), record)
        cli = subprocess.run(
            ["autodbg", "attach", str(sleeper.pid)],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert cli.returncode == 1 and len(cli.stderr.splitlines()) == 1, cli.stderr
        assert f"refused the record's socket {path!r}" in cli.stderr, cli.stderr
        with pytest.raises(BlockingIOError):
            listener.accept()  # nothing connected
        assert os.path.lexists(path) and os.path.exists(bound)  # nothing deleted
        assert os.path.exists(os.path.join(folder, f"{sleeper.pid}.json"))
        listener.close()
    finally:
        shutil.rmtree(outside, ignore_errors=True)


def test_a_record_of_another_host_without_tcp_is_refused(env, runtime_dir, tmp_path):
    # Its socket path names a file of that host: never connected to from here.
    import socket

    bound = os.path.join(runtime_dir, "4242.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(bound)
    listener.listen(1)
    listener.setblocking(False)
    record = {"pid": 4242, "host": "elsewhere-node-7", "job": "j", "socket": bound}
    out = subprocess.run(
        [PYTHON, "-c", FORGED_CLIENT, json.dumps(record)],
        env=dict(env, AUTODBG="0"),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert out.returncode == 1 and out.stderr.splitlines() == [
        (
            "autodbg: it runs on host elsewhere-node-7, and it does not listen on TCP: "
            "reach it from elsewhere-node-7 (`autodbg attach` there)"
        )
    ], out.stderr
    with pytest.raises(BlockingIOError):
        listener.accept()
    assert os.path.exists(bound)
    listener.close()


def test_a_client_that_vanishes_at_once_does_not_end_the_session(env, runtime_dir, start):
    # Before the debugger reads its first command, a hang-up is not a running command's:
    # interrupting then would end the session that was opening for the client.
    import socket

    proc = start([PYTHON, target("crash.py")], env)
    proc.wait_for("waiting up to")
    path = files_under(runtime_dir, lambda name: name.endswith(".sock"))[0]
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.connect(path)
    proc.wait_for("client detached; waiting")
    out = subprocess.run(
        ["autodbg", "attach", str(proc.pid), "-c", "p secret * 1111"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert out.returncode == 0 and "46662" in out.stdout, out.stdout + out.stderr
    assert "no debugger session" not in proc.output


@pytest.mark.timeout(120)
def test_forged_records_in_the_store_are_left_out(env, runtime_dir):
    # Anyone who reaches the job's store may write there: a record without a pid,
    # or one naming a host that no node of the job registered, is not listed, and
    # `attach` is never sent there.
    dist = pytest.importorskip("torch.distributed")
    import datetime

    server = dist.TCPStore(
        "127.0.0.1", 0, is_master=True, wait_for_workers=False, timeout=datetime.timedelta(10)
    )
    address = f"127.0.0.1:{server.port}"
    node = {"host": "node-a", "job": "j", "pid": 1, "dir": "/nonexistent"}
    server.set(f"autodbg/node/{server.add('autodbg/nodes', 1)}", json.dumps(node))
    base = {"job": "j", "rank": 3, "state": "waiting", "exception": "E", "where": "x:1 in f"}
    for record in (
        dict(base, host="node-a", pid=4242),  # the one real-looking record
        dict(base, host="evil.example", pid=4343),  # no node of the job is there
        dict(base, host="node-a"),  # no pid
        "not a record",
    ):
        server.set(f"autodbg/session/{server.add('autodbg/sessions', 1)}", json.dumps(record))

    def cli(*args):
        return subprocess.run(
            [os.path.join(os.path.dirname(PYTHON), "autodbg"), *args, "--store", address],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    listing = cli("ls", "--json")
    assert listing.returncode == 0, listing.stderr
    assert [(r["host"], r["pid"]) for r in json.loads(listing.stdout)] == [("node-a", 4242)]
    refused = cli("attach", "--pid", "4343")
    assert refused.returncode == 1
    assert refused.stderr.startswith("autodbg: no open session for pid 4343"), refused.stderr
