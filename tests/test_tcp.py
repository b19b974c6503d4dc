"""The opt-in TCP mode (AUTODBG_LISTEN): challenge-response with the user's key, both ways.

Every session here runs on this one host; a client is made to use TCP as one
on another host would: with the record in another runtime directory (its
socket is then not one the client may use), or with the record's host
changed to another name (whose socket path the client never uses).
"""

import json
import os
import select
import socket
import subprocess
import tempfile
import threading

import pytest
from conftest import PYTHON
from harness import BIN, target, wait_for_record

from autodbg.backends.socket import AUTH_WAIT

AUTODBG = os.path.join(BIN, "autodbg")


@pytest.fixture
def tcp_env(env, tmp_path):
    """The environment of a session in the TCP mode, its key file in a folder of the test's."""
    env.update(AUTODBG_LISTEN="127.0.0.1", AUTODBG_KEY_FILE=str(tmp_path / "keys" / "key"))
    return env


@pytest.fixture
def elsewhere():
    """Another runtime directory, as a client on another host has."""
    path = tempfile.mkdtemp(prefix="adt-", dir="/tmp")
    yield path
    subprocess.run(["rm", "-rf", path], check=False, timeout=30)


def crashed(start, env, runtime_dir):
    proc = start([PYTHON, target("crash.py")], env)
    return proc, wait_for_record(runtime_dir, pid=proc.pid, state="waiting")


def copy_record(record, root):
    """Put ``record`` in the runtime directory ``root``, as a record found elsewhere."""
    folder = os.path.join(root, record["job"])
    os.makedirs(folder, 0o700, exist_ok=True)
    with open(os.path.join(folder, f"{record['pid']}.json"), "w") as out:
        json.dump(record, out)


def attach(env, pid, *commands):
    argv = [AUTODBG, "attach", str(pid)] + [a for c in commands for a in ("-c", c)]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)


def test_attach_over_tcp_with_the_key(tcp_env, runtime_dir, start, elsewhere):
    proc, record = crashed(start, tcp_env, runtime_dir)
    assert record["tcp"].startswith("127.0.0.1:") and "token" not in record
    key_file = tcp_env["AUTODBG_KEY_FILE"]
    assert os.stat(key_file).st_mode & 0o777 == 0o600
    assert os.stat(os.path.dirname(key_file)).st_mode & 0o777 == 0o700
    with open(key_file, "rb") as source:
        key = source.read().strip()
    assert len(key) >= 32 and key.decode() not in json.dumps(record)

    copy_record(record, elsewhere)
    client_env = dict(tcp_env, AUTODBG_DIR=elsewhere)
    out = attach(client_env, proc.pid, "p secret * 1111")
    assert out.returncode == 0 and "46662" in out.stdout, out.stdout + out.stderr
    out = attach(client_env, proc.pid, "q")
    assert out.returncode == 0, out.stderr
    assert proc.wait(30) == 1


def test_a_client_without_the_key_is_refused_and_the_session_stays(
    tcp_env, runtime_dir, start, elsewhere, tmp_path
):
    proc, record = crashed(start, tcp_env, runtime_dir)
    copy_record(record, elsewhere)
    client_env = dict(tcp_env, AUTODBG_DIR=elsewhere)

    missing = str(tmp_path / "nowhere" / "key")
    out = attach(dict(client_env, AUTODBG_KEY_FILE=missing), proc.pid, "p secret")
    assert out.returncode == 1 and out.stderr.splitlines() == [
        (
            f"autodbg: pid {proc.pid}: no key file at {missing}: the TCP mode needs the key of "
            "the session's host there (copy that host's file, use a home directory the hosts "
            "share, or set AUTODBG_KEY_FILE)"
        )
    ], out.stderr
    assert not os.path.exists(missing)  # a client makes no key

    other = tmp_path / "other"
    other.mkdir(mode=0o700)
    (other / "key").write_text(os.urandom(32).hex())
    os.chmod(other / "key", 0o600)
    out = attach(dict(client_env, AUTODBG_KEY_FILE=str(other / "key")), proc.pid, "p secret")
    assert out.returncode == 1 and len(out.stderr.splitlines()) == 1, out.stderr
    assert "refused: this client did not prove it holds the session's key" in out.stderr
    proc.wait_for("refused a TCP client from 127.0.0.1:")
    assert proc.output.count("refused a TCP client") == 1

    out = attach(client_env, proc.pid, "p secret * 1111")
    assert out.returncode == 0 and "46662" in out.stdout, out.stdout + out.stderr


CLIENT = """
import json, sys
from autodbg import client
try:
    client.attach(json.loads(sys.argv[1]), ["p secret * 1111"])
except client.AttachError as error:
    sys.exit(f"autodbg: {error}")
"""


def run_client(env, record):
    """Run the attach client on ``record`` in a Python of its own (not in a session itself)."""
    return subprocess.run(
        [PYTHON, "-c", CLIENT, json.dumps(record)],
        env=dict(env, AUTODBG="0"),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_silent_and_garbage_clients_do_not_block_a_good_one(tcp_env, runtime_dir, start):
    tcp_env["AUTODBG_LISTEN"] = "0.0.0.0"
    proc, record = crashed(start, tcp_env, runtime_dir)
    host, _, port = record["tcp"].rpartition(":")
    assert host == record["host"]  # a wildcard address publishes the host's name
    silent = socket.create_connection(("127.0.0.1", int(port)), timeout=10)
    garbage = socket.create_connection(("127.0.0.1", int(port)), timeout=10)
    garbage.sendall(os.urandom(300).replace(b"\n", b"x") + b"\n")
    assert garbage.recv(4096).startswith(b"autodbg: refused: not an autodbg client")

    # The record of another host: never its socket path, TCP with the key.
    forged = dict(record, host="elsewhere-node-7", socket="/nonexistent/x.sock")
    out = run_client(tcp_env, forged)
    assert out.returncode == 0 and "46662" in out.stdout, out.stdout + out.stderr
    silent.setblocking(False)
    with pytest.raises(BlockingIOError):  # still waiting to authenticate: it blocked nobody
        silent.recv(1)
    silent.settimeout(AUTH_WAIT + 10)
    assert silent.recv(1) == b""  # then dropped, without a word or a line in the log
    assert "refused a TCP client" in proc.output and "not an autodbg client" in proc.output
    assert proc.output.count("refused a TCP client") == 1
    silent.close()
    garbage.close()


def test_a_listener_without_the_key_gets_nothing(tcp_env, runtime_dir, start):
    # A forged record's tcp names a listener of someone else's: it cannot prove it holds
    # the key, and the client refuses it before it sends anything of the user's.
    listener = socket.create_server(("127.0.0.1", 0))
    received = []

    def impostor():
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(10)
            received.append(conn.recv(4096))
            conn.sendall(b"AUTODBG-NONCE " + b"ab" * 32 + b"\n")
            received.append(conn.recv(4096))
            conn.sendall(b"AUTODBG-PROOF " + b"cd" * 32 + b"\n")
            received.append(conn.recv(4096))

    thread = threading.Thread(target=impostor, daemon=True)
    thread.start()
    keys_dir = os.path.dirname(tcp_env["AUTODBG_KEY_FILE"])
    os.mkdir(keys_dir, 0o700)
    with open(tcp_env["AUTODBG_KEY_FILE"], "w", opener=lambda p, f: os.open(p, f, 0o600)) as out:
        out.write(os.urandom(32).hex())
    record = {
        "pid": 4242,
        "host": "elsewhere-node-7",
        "socket": "/tmp/x.sock",
        "tcp": f"127.0.0.1:{listener.getsockname()[1]}",
    }
    out = run_client(tcp_env, record)
    thread.join(20)
    assert out.returncode == 1 and out.stderr.splitlines() == [
        (
            f"autodbg: refused {record['tcp']}: it did not prove that it holds your key; "
            "it is not your session, or its key file differs from yours"
        )
    ], out.stderr
    assert received[0].startswith(b"AUTODBG-TCP/1 ") and received[1].startswith(b"AUTODBG-PROOF ")
    assert received[2] == b""  # nothing after its proof: no handshake, no command
    listener.close()


def test_an_unsafe_key_file_is_one_line_and_no_tcp(tcp_env, runtime_dir, start, tmp_path):
    folder = tmp_path / "keys"
    folder.mkdir(mode=0o700)
    (folder / "key").write_text(os.urandom(32).hex())
    os.chmod(folder / "key", 0o644)
    proc, record = crashed(start, tcp_env, runtime_dir)
    assert "tcp" not in record
    proc.wait_for("may be read or written by others (mode 644)")
    assert "; no TCP listener (AUTODBG_LISTEN), the Unix socket works" in proc.output
    out = attach(tcp_env, proc.pid, "p secret * 1111")  # the Unix socket
    assert out.returncode == 0 and "46662" in out.stdout, out.stdout + out.stderr


def test_loopback_in_a_job_of_several_hosts_is_refused(tcp_env, runtime_dir, start):
    # The job's store is on another host: so are other nodes, which loopback does not reach.
    tcp_env.update(WORLD_SIZE="4", LOCAL_WORLD_SIZE="2", MASTER_ADDR="10.9.8.7", MASTER_PORT="1")
    proc, record = crashed(start, tcp_env, runtime_dir)
    assert "tcp" not in record
    proc.wait_for("AUTODBG_LISTEN=127.0.0.1 is a loopback address, which the other hosts")
    assert not os.path.exists(tcp_env["AUTODBG_KEY_FILE"])


def test_a_relay_cannot_type_commands_into_the_session(tcp_env, runtime_dir, start, tmp_path):
    # A forged record sends the client to a relay, which passes the proofs on to the real
    # session (they prove the key, not the path) and then adds a command of its own: the
    # frames' HMACs catch it, the connection ends, the command never runs.
    proc, record = crashed(start, tcp_env, runtime_dir)
    marker = tmp_path / "injected"
    command = f"!open({str(marker)!r}, 'w').close()\n".encode()
    injected = len(command).to_bytes(4, "big") + bytes(32) + command
    listener = socket.create_server(("127.0.0.1", 0))

    def relay():
        client, _ = listener.accept()
        host, _, port = record["tcp"].rpartition(":")
        server = socket.create_connection((host, int(port)), timeout=10)
        from_server, done = b"", False
        with client, server:
            while True:
                ready, _, _ = select.select([client, server], [], [], 20)
                if not ready:
                    return
                for sock, other in ((client, server), (server, client)):
                    if sock in ready:
                        data = sock.recv(65536)
                        if not data:
                            return
                        other.sendall(data)
                        if sock is server and not done:
                            from_server += data
                            if from_server.count(b"\n") >= 2:  # the nonce, then the proof
                                server.sendall(injected)
                                done = True

    thread = threading.Thread(target=relay, daemon=True)
    thread.start()
    forged = dict(record, host="elsewhere-node-7", tcp=f"127.0.0.1:{listener.getsockname()[1]}")
    out = run_client(tcp_env, forged)
    assert out.returncode == 1 and len(out.stderr.splitlines()) == 1, out.stdout + out.stderr
    proc.wait_for("client detached; waiting", timeout=10)
    thread.join(20)
    assert not marker.exists()
    assert "46662" not in out.stdout
    listener.close()
    out = run_client(tcp_env, dict(record, host="elsewhere-node-7"))  # the session still serves
    assert out.returncode == 0 and "46662" in out.stdout, out.stdout + out.stderr
