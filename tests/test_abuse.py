"""Endpoints that withstand abuse (issue 9, point 4): fuzzed input, half-open, slow and many clients.

Every endpoint autodbg has besides the web ones: the session's Unix socket,
its TCP listener (the TCP mode), and the CLI's reading of the runtime
directory's files and of the job's store. Each fuzz test uses a fixed seed
and a bounded count and time, prints how many cases it ran, and ends with a
good client attaching to the same debugged process and getting its answer.
"""

import base64
import itertools
import json
import os
import random
import re
import socket
import subprocess
import threading
import time

import psutil
import pytest
import webpage
from conftest import PYTHON
from harness import BIN, target, wait_for_record, wait_until
from websockets.sync.client import connect as ws_connect

from autodbg import keys, messages, registry, stacks
from autodbg.backends.socket import AUTH_WAIT, SEND_WAIT

AUTODBG = os.path.join(BIN, "autodbg")
SEED = 9
CASE_WAIT = 30.0  # seconds one bad client may take before the session is free again
HERE = os.uname().nodename


def cli(env, *args, timeout=30):
    """Run ``autodbg ARGS``; check what the CLI promises whatever it read: no traceback, 0/1/2."""
    out = subprocess.run(
        [AUTODBG, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert out.returncode in (0, 1, 2), (args, out.returncode, out.stdout + out.stderr)
    # (`show` prints a crash record's traceback on stdout: the CLI's own would be on stderr.)
    assert "Traceback" not in out.stderr, (args, out.stderr)
    stray = [line for line in out.stderr.splitlines() if not line.startswith("autodbg: ")]
    assert stray == [], (args, out.stderr)
    return out


def assert_attachable(env, proc):
    """The debugged process lives, and a good client attaches to it and gets its answer."""
    assert proc.popen.poll() is None, proc.output
    # The last bad client's leaving ends when the session waits again: a loaded machine
    # may take a while to get its debugger there, and until then a client is told "busy".
    wait_for_record(env["AUTODBG_DIR"], timeout=CASE_WAIT, pid=proc.pid, state="waiting")
    # The record may say "waiting" a moment before the session has let the last bad
    # client go: it answers "busy" until then, an answer a user would retry on.
    answers = []

    def answered():
        out = cli(env, "attach", str(proc.pid), "-c", "p secret * 1111")
        answers.append(out)
        return "busy" not in out.stdout + out.stderr

    wait_until(answered, CASE_WAIT, "an answer that is not busy")
    out = answers[-1]
    assert out.returncode == 0 and "46662" in out.stdout, out.stdout + out.stderr


def crashed(start, env, runtime_dir):
    proc = start([PYTHON, target("crash.py")], env)
    return proc, wait_for_record(runtime_dir, pid=proc.pid, state="waiting")


def harmless(data):
    """Make debugger input that cannot resume or end the session: any line that starts
    like a pdb command (a letter, ``!``) becomes a comment. Debugger commands are the
    user's to type; the handshake and the bytes around them are what is fuzzed."""
    parts = re.split(rb"([\r\n])", data)
    return b"".join(b"#" + part if re.match(rb"[\s]*[A-Za-z!]", part) else part for part in parts)


def noise(rng, size):
    return bytes(rng.getrandbits(8) for _ in range(size))


def unix_cases(rng, count):
    """Yield ``(kind, bytes)``: what a client of the Unix socket sends, all of it at once."""
    sizes = ["0", "-1", "1", "65535", "65536", "99999999999999999999", "x", "1e3", "\u0663", ""]
    kinds = ("random", "truncated", "window", "term", "nul", "oversized", "line", "flood")
    for n in range(count):
        kind = kinds[n % len(kinds)]
        if kind == "random":
            data = harmless(noise(rng, rng.randrange(0, 2000)))
        elif kind == "truncated":
            data = b"AUTODBG-ATTACH/1 24 80 xterm\n"[: rng.randrange(0, 29)]
        elif kind == "window":
            rows, cols = rng.choice(sizes), rng.choice(sizes)
            data = f"AUTODBG-ATTACH/1 {rows} {cols} xterm\n".encode()
        elif kind == "term":
            data = b"AUTODBG-ATTACH/1 24 80 " + b"x" * rng.choice([60, 400, 480, 600, 5000]) + b"\n"
        elif kind == "nul":
            term = rng.choice(
                [b"xt\x00erm", b"\xff\xfe\xfd", b"\xc3\x28", b"\x00" * 40, b"\x1b[2J"]
            )
            data = b"AUTODBG-ATTACH/1 24 80 " + term + b"\n" + harmless(noise(rng, 40))
        elif kind == "oversized":
            data = b"AUTODBG-ATTACH/1 line\n" + b"#" + b"y" * rng.choice([5000, 70000, 300000])
        elif kind == "line":
            data = b"AUTODBG-ATTACH/1 line\n" + harmless(noise(rng, rng.randrange(1, 3000)))
        else:  # more keys than a pty's input queue holds, faster than the debugger reads them
            data = b"AUTODBG-ATTACH/1 24 80 xterm\n" + b"#" + b"z" * rng.choice([20000, 200000])
        yield kind, data


def throw(path_or_address, data, wait=CASE_WAIT):
    """Connect, send ``data``, end the sending side, read to the end; return what came.

    The session closes the connection once it has done with the client (detached
    it, or refused it): reading to the end is waiting for the session to be free.
    """
    family = socket.AF_UNIX if isinstance(path_or_address, str) else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as conn:
        conn.settimeout(wait)
        conn.connect(path_or_address)
        try:
            conn.sendall(data)
            conn.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # refused (and closed) before it sent it all: EPIPE, ECONNRESET, ENOTCONN
        got = []
        while True:
            try:
                chunk = conn.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            got.append(chunk)
        return b"".join(got)


@pytest.mark.timeout(240)
def test_fuzzed_unix_socket_clients(env, runtime_dir, start):
    proc, record = crashed(start, env, runtime_dir)
    rng = random.Random(SEED)
    ran, budget = {}, time.monotonic() + 90
    for kind, data in unix_cases(rng, 48):
        if time.monotonic() > budget:
            break
        try:
            throw(record["socket"], data)
        except TimeoutError:
            raise AssertionError(f"the session kept a {kind} client {CASE_WAIT} s: {data[:80]!r}")
        ran[kind] = ran.get(kind, 0) + 1
        assert proc.popen.poll() is None, f"ended by a {kind} client {data[:80]!r}:\n{proc.output}"
    print(f"fuzz: unix socket: {sum(ran.values())} cases {ran}")
    assert sum(ran.values()) >= 24
    assert_attachable(env, proc)


@pytest.fixture
def tcp_env(env, tmp_path):
    """The environment of a session in the TCP mode, its key file in a folder of the test's."""
    env.update(AUTODBG_LISTEN="127.0.0.1", AUTODBG_KEY_FILE=str(tmp_path / "keys" / "key"))
    return env


def authenticated(address, key):
    """Authenticate to the TCP listener at ``address`` as a client holding ``key``.

    Returns:
        tuple: the connection and the nonces ``(client, server)``, to seal frames with.
    """
    conn = socket.create_connection(address, timeout=CASE_WAIT)
    mine = keys.nonce()
    conn.sendall(b"AUTODBG-TCP/1 " + mine.hex().encode() + b"\n")
    theirs = bytes.fromhex(read_line(conn).split()[1].decode())
    conn.sendall(b"AUTODBG-PROOF " + keys.proof(key, "client", mine, theirs).hex().encode() + b"\n")
    assert read_line(conn).startswith(b"AUTODBG-PROOF ")
    return conn, mine, theirs


def read_line(conn):
    line = b""
    while not line.endswith(b"\n"):
        byte = conn.recv(1)
        if not byte:
            break
        line += byte
    return line


def frame(key, mine, theirs, number, data):
    upstream = keys.proof(key, "client to server", mine, theirs)
    return len(data).to_bytes(4, "big") + keys._frame_mac(upstream, number, data) + data


def to_end(conn):
    got = b""
    while True:
        try:
            chunk = conn.recv(65536)
        except ConnectionResetError:
            return got
        if not chunk:
            return got
        got += chunk


@pytest.mark.timeout(240)
def test_fuzzed_tcp_clients(tcp_env, runtime_dir, start):
    proc, record = crashed(start, tcp_env, runtime_dir)
    host, _, port = record["tcp"].rpartition(":")
    address = (host, int(port))
    key = keys.load(tcp_env["AUTODBG_KEY_FILE"])
    rng = random.Random(SEED)
    hello = b"AUTODBG-TCP/1 "
    replayed = []  # a proof of an earlier connection: its nonces were not this one's
    kinds = ("random", "hello", "proof", "replay", "long", "frames", "huge frame", "sealed")
    ran, budget = {}, time.monotonic() + 90
    for n in range(48):
        if time.monotonic() > budget:
            break
        kind = kinds[n % len(kinds)]
        if kind in ("random", "hello", "long"):
            data = {
                "random": noise(rng, rng.randrange(0, 600)),
                "hello": hello
                + rng.choice([b"", b"zz" * 32, b"ab" * 31, b"ab" * 33, b"\xff" * 64])
                + rng.choice([b"\n", b" extra\n", b""]),
                "long": hello + b"a" * rng.choice([199, 200, 201, 5000]) + b"\n",
            }[kind]
            answer = throw(address, data, AUTH_WAIT + CASE_WAIT)
            assert answer == b"" or answer.startswith(b"autodbg: refused"), answer
        elif kind in ("proof", "replay"):
            with socket.create_connection(address, timeout=AUTH_WAIT + CASE_WAIT) as conn:
                mine = keys.nonce()
                conn.sendall(hello + mine.hex().encode() + b"\n")
                theirs = bytes.fromhex(read_line(conn).split()[1].decode())
                good = keys.proof(key, "client", mine, theirs)
                if kind == "replay" and replayed:
                    proof = replayed[-1]
                else:
                    proof = rng.choice([noise(rng, 32), good[:31], good + b"\x00", b""])
                replayed.append(good)
                conn.sendall(b"AUTODBG-PROOF " + proof.hex().encode() + b"\n")
                conn.shutdown(socket.SHUT_WR)
                answer = to_end(conn)
                assert answer.startswith(b"autodbg: refused: this client did not prove"), answer
        else:
            conn, mine, theirs = authenticated(address, key)
            with conn:
                try:
                    if kind == "frames":
                        conn.sendall(noise(rng, rng.randrange(1, 3000)))
                    elif kind == "huge frame":
                        size = rng.choice([0, 65537, 2**31, 2**32 - 1]).to_bytes(4, "big")
                        conn.sendall(size + noise(rng, 32) + b"x" * 100)
                    else:  # a handshake and harmless debugger input, sealed as a good client would
                        data = b"AUTODBG-ATTACH/1 line\n" + harmless(
                            noise(rng, rng.randrange(1, 2000))
                        )
                        conn.sendall(frame(key, mine, theirs, 0, data))
                    conn.shutdown(socket.SHUT_WR)
                except OSError:
                    pass  # dropped before it sent it all (a bad frame, or busy): ENOTCONN, EPIPE
                to_end(conn)  # the relay or the session closes it
        ran[kind] = ran.get(kind, 0) + 1
        assert proc.popen.poll() is None, f"ended by a {kind} client:\n{proc.output}"
    print(f"fuzz: tcp listener: {sum(ran.values())} cases {ran}")
    assert sum(ran.values()) >= 24
    # A good client, over TCP (the record of another host: never its socket path).
    forged = dict(record, host="elsewhere-node-7", socket="/nonexistent/x.sock")
    out = subprocess.run(
        [PYTHON, "-c", TCP_CLIENT, json.dumps(forged)],
        env=dict(tcp_env, AUTODBG="0"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0 and "46662" in out.stdout, out.stdout + out.stderr
    assert_attachable(tcp_env, proc)


TCP_CLIENT = """
import json, sys
from autodbg import client
try:
    client.attach(json.loads(sys.argv[1]), ["p secret * 1111"])
except client.AttachError as error:
    sys.exit(f"autodbg: {error}")
"""


def junk(rng, depth=0):
    """A JSON value of any type, with the awkward ones often."""
    pick = rng.randrange(12 if depth < 2 else 8)
    if pick == 0:
        return None
    if pick == 1:
        return rng.choice([True, False])
    if pick == 2:
        return rng.choice([0, -1, 1, 2**31, 2**64, -(2**70), 10**30])
    if pick == 3:
        return rng.choice([0.5, -1e308, 1e308, float("nan"), float("inf")])
    if pick in (4, 5):
        return rng.choice(["", "x", "\x00", "\ud800", "\u202e", "é" * 10, "a" * 5000, "../../etc"])
    if pick in (6, 7):
        return "".join(chr(rng.randrange(1, 0x3000)) for _ in range(rng.randrange(0, 30)))
    if pick in (8, 9):
        return [junk(rng, depth + 1) for _ in range(rng.randrange(0, 4))]
    return {str(junk(rng, 2))[:20]: junk(rng, depth + 1) for _ in range(rng.randrange(0, 4))}


def mutated(rng, template):
    """``template`` with some fields replaced by junk, some dropped, some added."""
    out = {}
    for name, value in template.items():
        roll = rng.random()
        if roll < 0.25:
            out[name] = junk(rng)
        elif roll > 0.9:
            continue
        else:
            out[name] = value
    if rng.random() < 0.2:
        out[str(junk(rng))[:20]] = junk(rng)
    return out


def file_body(rng, value):
    """What a fuzzed file holds: JSON of ``value``, or bytes that are not quite JSON."""
    roll = rng.random()
    text = json.dumps(value)
    if roll < 0.6:
        return text.encode()
    if roll < 0.7:
        return text.encode()[: rng.randrange(0, len(text) + 1)]
    if roll < 0.8:
        return noise(rng, rng.randrange(0, 400))
    if roll < 0.85:
        return b"[" * 200000  # deeper than json's recursion
    if roll < 0.9:
        return json.dumps(junk(rng)).encode()
    if roll < 0.95:
        return b"\xff\xfe" + text.encode("utf-16-le")
    return text.encode() + b" " * (3 << 20)  # big


def write(path, body):
    with open(path, "wb") as out:
        out.write(body)


def fuzz_runtime_dir(rng, root, job_folder, live, round_):
    """Write fuzzed session records, job records, stack files and crash records; return their count."""
    tag = registry.host_tag()
    folders = [job_folder, os.path.join(root, f"fz{round_}")]
    os.makedirs(folders[1], 0o700, exist_ok=True)
    crash_folder = os.path.join(root, "crashes", f"fz{round_}")
    os.makedirs(crash_folder, 0o700, exist_ok=True)
    os.chmod(os.path.dirname(crash_folder), 0o700)
    written = 0
    for n in range(8):
        folder = rng.choice(folders)
        pid = rng.choice(live + [2**22 + n, 1])
        session = {
            "pid": pid,
            "rank": rng.choice([None, 0, 3]),
            "host": HERE,
            "job": os.path.basename(folder),
            "state": rng.choice(["waiting", "attached"]),
            "socket": os.path.join(folder, f"{pid}.sock"),
            "exception": "E: x",
            "where": "x.py:1 in f",
            "started": time.time(),
            "process_started": registry.process_started(pid),
            "tcp": rng.choice([None, "127.0.0.1:1"]),
        }
        name = rng.choice([f"{pid}.json", f"{rng.randrange(10**6)}.json", "x.json", "..json"])
        if name == f"{live[1]}.json" and folder == job_folder:
            name = "x.json"  # the real session's own record stays its own
        write(os.path.join(folder, name), file_body(rng, mutated(rng, session)))
        node = {
            "job": os.path.basename(folder),
            "run_id": "r",
            "store": rng.choice(["127.0.0.1:1", "x", ":", "[::1]:1"]),
            "rendezvous": None,
            "node_rank": 0,
            "nnodes": rng.choice([1, 2]),
            "ranks": [0, 1],
            "host": HERE,
            "pid": pid,
            "python": PYTHON,
            "dir": root,
            "started": time.time(),
            "process_started": registry.process_started(pid),
            "nodes": rng.choice([[], [{"host": HERE, "dir": root}], "x", [1, None]]),
        }
        write(os.path.join(folder, f"node.{tag}.json"), file_body(rng, mutated(rng, node)))
        header = {
            "pid": pid,
            "host": HERE,
            "job": os.path.basename(folder),
            "rank": rng.choice([None, 0, 1]),
            "world_size": 2,
            "signal": rng.choice([10, 9, 0, -3, 2**40]),
            "registered": time.time(),
            "main_thread": 1,
        }
        body = file_body(rng, mutated(rng, header))
        write(os.path.join(folder, f"{pid}.stack"), body.ljust(stacks.HEADER - 1)[:] + b"\n")
        crash = {
            "pid": pid,
            "host": HERE,
            "job": f"fz{round_}",
            "rank": rng.choice([None, 0]),
            "world_size": 2,
            "time": time.time() - n,
            "thread": "MainThread",
            "argv": ["train.py"],
            "exception": "E: x",
            "where": "x.py:1 in f",
            "traceback": "Traceback...\n",
            "frames": [{"file": "x.py", "line": 1, "function": "f", "locals": {"a": "1"}}],
            "note": None,
        }
        crash = mutated(rng, crash)
        if isinstance(crash.get("frames"), list) and rng.random() < 0.5:
            crash["frames"] = [
                mutated(rng, f) if isinstance(f, dict) else f for f in crash["frames"]
            ]
        write(
            os.path.join(crash_folder, f"20260101T000000.{n:03d}Z-{pid}.{tag}.json"),
            file_body(rng, crash),
        )
        written += 4
    # Files that are not files: a symlink to an endless device, a FIFO nobody writes.
    for name in (f"{live[0]}.json", f"node.{tag}.json", f"{live[0]}.stack"):
        path = os.path.join(folders[1], name)
        registry.remove(path)
        if rng.random() < 0.5:
            os.symlink("/dev/zero", path)
        else:
            os.mkfifo(path, 0o600)
        written += 1
    os.symlink("/dev/zero", os.path.join(crash_folder, f"20260101T000001.000Z-1.{tag}.json"))
    return written + 1


@pytest.mark.timeout(300)
def test_fuzzed_runtime_dir_files_are_left_out(env, runtime_dir, start):
    proc, record = crashed(start, env, runtime_dir)
    sleeper = start(["sleep", "600"], env)  # a live process, no session: forged records name it
    job_folder = os.path.dirname(record["socket"])
    rng = random.Random(SEED)
    files = runs = 0
    budget = time.monotonic() + 150
    for round_ in range(6):
        if time.monotonic() > budget:
            break
        files += fuzz_runtime_dir(rng, runtime_dir, job_folder, [sleeper.pid, proc.pid], round_)
        for args in (
            ["ls"],
            ["ls", "--json"],
            ["show"],
            ["show", "--list"],
            ["show", "--json", str(sleeper.pid)],
            ["stack", "--all", "--local", "--timeout", "0.5"],
            ["stack", str(sleeper.pid), "--local", "--timeout", "0.5"],
            ["cast", "all", "p 1", "--local", "--timeout", "0.5"],
            ["attach", str(sleeper.pid), "-c", "p 1"],
        ):
            cli(env, *args)
            runs += 1
        assert proc.popen.poll() is None, proc.output
    print(f"fuzz: runtime directory: {files} files, read by {runs} CLI runs")
    assert runs >= 18
    # The junk goes (the session's own socket and record stay), and the session still serves.
    keep = {record["socket"], record_path(record)}
    for folder, _, names in os.walk(runtime_dir):
        for name in names:
            if os.path.join(folder, name) not in keep:
                os.unlink(os.path.join(folder, name))
    assert_attachable(env, proc)


def record_path(record):
    return os.path.join(os.path.dirname(record["socket"]), f"{record['pid']}.json")


@pytest.mark.timeout(240)
def test_fuzzed_store_values_are_left_out(env, runtime_dir, start):
    dist = pytest.importorskip("torch.distributed")
    import datetime

    proc, _ = crashed(start, env, runtime_dir)
    server = dist.TCPStore(
        "127.0.0.1", 0, is_master=True, wait_for_workers=False, timeout=datetime.timedelta(10)
    )
    address = f"127.0.0.1:{server.port}"
    rng = random.Random(SEED)
    node = {"host": HERE, "job": "j", "pid": 1, "dir": runtime_dir, "node_rank": 0}
    session = {
        "job": "j",
        "rank": 3,
        "host": HERE,
        "pid": proc.pid,
        "state": "waiting",
        "socket": "/tmp/x.sock",
        "exception": "E",
        "where": "x:1 in f",
    }
    values = runs = 0
    budget = time.monotonic() + 120
    for round_ in range(4):  # each CLI run imports torch: a few seconds
        if time.monotonic() > budget:
            break
        for pattern, counter, template in (
            ("autodbg/node/{}", "autodbg/nodes", node),
            ("autodbg/session/{}", "autodbg/sessions", session),
        ):
            for _ in range(16):
                key = pattern.format(server.add(counter, 1))
                body = file_body(rng, mutated(rng, template))
                server.set(key, body[: 1 << 20])
                values += 1
        server.set("autodbg/job", file_body(rng, junk(rng)) if round_ % 2 else b"\xff")
        values += 1
        cli(env, "ls", *(["--json"] if round_ % 2 else []), "--store", address)
        runs += 1
    # Counters that are not counters, or that name more keys than anyone wrote.
    for counter_value in (b"many", str(10**9).encode()):
        server.set("autodbg/sessions", counter_value)
        out = cli(env, "ls", "--store", address, timeout=60)
        runs += 1
        values += 1
        assert out.returncode in (0, 1)
    print(f"fuzz: store: {values} values, read by {runs} CLI runs")
    assert runs >= 4
    assert_attachable(env, proc)


def test_half_open_clients_do_not_keep_the_session(env, runtime_dir, start):
    proc, record = crashed(start, env, runtime_dir)
    path = record["socket"]
    # Connects and says nothing: a line client after HANDSHAKE_WAIT; it holds the session
    # as an attached client would, until it goes; meanwhile the next one is told "busy".
    silent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    silent.settimeout(CASE_WAIT)
    silent.connect(path)
    wait_for_record(runtime_dir, pid=proc.pid, state="attached")
    busy = cli(env, "attach", str(proc.pid), "-c", "p 1")
    assert busy.returncode == 1 and "busy" in busy.stderr, busy.stderr
    silent.close()
    proc.wait_for("client detached; waiting")
    assert_attachable(env, proc)

    # Vanishes in the middle of a command: the command is interrupted, the session stays.
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as gone:
        gone.settimeout(CASE_WAIT)
        gone.connect(path)
        gone.sendall(
            b"AUTODBG-ATTACH/1 line\n!import time; print('run' + 'ning'); time.sleep(60)\n"
        )
        wait_until(lambda: b"running" in gone.recv(65536), CASE_WAIT, "the command to run")
    proc.wait_for("client detached; waiting", count=2)
    assert_attachable(env, proc)


@pytest.mark.parametrize("kind", ["line", "pty", "tcp"])
@pytest.mark.timeout(120)
def test_a_client_that_never_reads_is_dropped(env, runtime_dir, start, tmp_path, kind):
    # A command printing a lot to a client that reads nothing: once the socket's buffers
    # are full and nothing more is taken for SEND_WAIT seconds, the client is dropped
    # (the command interrupted), and the session waits for the next one.
    if kind == "tcp":
        env.update(AUTODBG_LISTEN="127.0.0.1", AUTODBG_KEY_FILE=str(tmp_path / "keys" / "key"))
    proc, record = crashed(start, env, runtime_dir)
    hello = b"AUTODBG-ATTACH/1 24 80 xterm\n" if kind == "pty" else b"AUTODBG-ATTACH/1 line\n"
    command = hello + b"!for i in range(10**6): print('x' * 200)\r\n"
    if kind == "tcp":
        host, _, port = record["tcp"].rpartition(":")
        stuck, mine, theirs = authenticated((host, int(port)), keys.load(env["AUTODBG_KEY_FILE"]))
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stuck.sendall(frame(keys.load(env["AUTODBG_KEY_FILE"]), mine, theirs, 0, command))
    else:
        stuck = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stuck.connect(record["socket"])
        stuck.sendall(command)
    proc.wait_for("client detached; waiting", timeout=SEND_WAIT + 40)
    assert f"dropped the socket client: the client took no output for {SEND_WAIT:g} s" in (
        proc.output
    )
    assert_attachable(env, proc)
    if kind == "tcp":
        # The relay waits for it no longer than the session did (twice SEND_WAIT from
        # its stall), then lets the connection go, though the client still reads nothing.
        mine = stuck.getsockname()[1]
        wait_until(
            lambda: (
                not [
                    c
                    for c in psutil.Process(proc.pid).net_connections("tcp")
                    if c.raddr and c.raddr.port == mine
                ]
            ),
            2 * SEND_WAIT + CASE_WAIT,
            "the relay to let the client go",
        )
    stuck.close()


@pytest.mark.timeout(120)
def test_the_relay_takes_output_while_the_session_takes_no_keys(tcp_env, runtime_dir, start):
    # A TCP client pastes keys while a command prints: the session reads no keys until
    # the command ends, so they fill the relay's way in; its output must still get out
    # (a relay blocked in a send of keys took none, and the session dropped the client).
    proc, record = crashed(start, tcp_env, runtime_dir)
    host, _, port = record["tcp"].rpartition(":")
    key = keys.load(tcp_env["AUTODBG_KEY_FILE"])
    conn, mine, theirs = authenticated((host, int(port)), key)
    conn.settimeout(None)
    plain = keys.seal(conn, "client", key, mine, theirs)
    plain.settimeout(CASE_WAIT)
    plain.sendall(
        b"AUTODBG-ATTACH/1 line\n"
        b"!import time; [print('x' * 2000, i) or time.sleep(0.01) for i in range(800)]\n"
    )
    paste = (b"#" + b"k" * 1000 + b"\n") * 1000 + b"p secret * 1111\n"
    writer = threading.Thread(target=plain.sendall, args=(paste,), daemon=True)
    writer.start()
    got = b""
    while b"46662" not in got:
        chunk = plain.recv(65536)
        assert chunk, got[-2000:]
        got += chunk
    writer.join(CASE_WAIT)
    assert b"x" * 2000 + b" 799" in got
    assert "dropped the socket client" not in proc.output, proc.output
    plain.close()
    assert_attachable(tcp_env, proc)


@pytest.mark.timeout(120)
def test_many_clients_at_once(env, runtime_dir, start):
    proc, record = crashed(start, env, runtime_dir)
    clients = []
    for _ in range(50):
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.settimeout(CASE_WAIT)
        conn.connect(record["socket"])  # a full backlog would be EAGAIN here, at once
        clients.append(conn)
    for conn in clients:
        conn.shutdown(socket.SHUT_WR)  # none says a word: each is a line client that leaves
    answers = [to_end(conn) for conn in clients]
    for conn in clients:
        conn.close()
    assert sum(b"busy" in answer for answer in answers) >= 1
    assert proc.popen.poll() is None
    assert_attachable(env, proc)


def test_another_uid_is_refused_and_the_owner_attaches(env, runtime_dir, start):
    # The session runs as root; a process of uid 65534 (nobody) connects. The modes
    # (0700 directories, 0600 socket) would stop it before the server sees it, so the
    # test opens them for the moment of the connection: only SO_PEERCRED is left to refuse.
    if os.getuid() != 0:
        pytest.skip("needs root to switch to another uid")
    proc, record = crashed(start, env, runtime_dir)
    os.chmod(runtime_dir, 0o711)  # others may enter; writable still by the owner alone
    folder = os.path.dirname(record["socket"])
    os.chmod(folder, 0o711)
    os.chmod(record["socket"], 0o666)
    try:
        out = subprocess.run(
            [PYTHON, "-c", NOBODY_CLIENT, record["socket"]],
            env=dict(env, AUTODBG="0"),
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    finally:
        os.chmod(record["socket"], 0o600)
        os.chmod(folder, 0o700)
        os.chmod(runtime_dir, 0o700)
    assert (
        out.stdout.strip() == "autodbg: refused: uid 65534 may not attach to a session of uid 0"
    ), out.stdout + out.stderr + proc.output
    proc.wait_for(f"refused a client of uid 65534 on {record['socket']}")
    assert_attachable(env, proc)


NOBODY_CLIENT = """
import os, socket, sys
os.setgroups([])
os.setgid(65534)
os.setuid(65534)  # root's Python, then nobody: another uid's client, past the file modes
conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
conn.settimeout(20)
conn.connect(sys.argv[1])
try:
    conn.sendall(b"AUTODBG-ATTACH/1 line\\np secret\\n")
except BrokenPipeError:
    pass  # refused already: the line is there to read
got = b""
while True:
    chunk = conn.recv(4096)
    if not chunk:
        break
    got += chunk
print(got.decode(errors="replace"))
"""


@pytest.mark.parametrize("unsafe", ["world-writable", "symlink"])
def test_an_unsafe_runtime_dir_is_refused_by_the_cli_and_the_owner_attaches(
    env, runtime_dir, start, tmp_path, unsafe
):
    proc, _ = crashed(start, env, runtime_dir)
    if unsafe == "world-writable":
        os.chmod(runtime_dir, 0o777)
        bad = env
    else:
        link = tmp_path / "rt"
        link.symlink_to(runtime_dir)
        bad = dict(env, AUTODBG_DIR=str(link))
    for args in (["ls"], ["attach", str(proc.pid), "-c", "p 1"], ["show"], ["stack", "--all"]):
        out = cli(bad, *args)
        assert out.returncode == 1 and len(out.stderr.splitlines()) == 1, (args, out.stderr)
        assert "world-writable" in out.stderr or "is a symlink" in out.stderr, out.stderr
    os.chmod(runtime_dir, 0o700)
    assert_attachable(env, proc)


# The web endpoints: a session's page (AUTODBG_MODE=web) and the dashboard (`autodbg web`).

WEB_URL = re.compile(r"open http://127\.0\.0\.1:(\d+)/\?token=([A-Za-z0-9_-]+)")


def web_session(start, env):
    """Start web_crash.py in web mode; return (proc, port, token, cookie)."""
    proc = start(
        [PYTHON, target("web_crash.py")], dict(env, AUTODBG_MODE="web", AUTODBG_WAIT="600")
    )
    proc.wait_for("?token=")
    port, token = WEB_URL.search(proc.output).groups()
    return proc, int(port), token, webpage.cookie(int(port), token)


def http_get(port, path, headers=None):
    return webpage.get(port, path, headers, timeout=CASE_WAIT)


def upgrade(port, cookie="", origin=None, host=None, path="/ws", key=None, extra=()):
    """A websocket upgrade request, as bytes; each part may be left out (None) or forged."""
    host = f"127.0.0.1:{port}" if host is None else host
    origin = f"http://127.0.0.1:{port}" if origin is None else origin
    lines = [f"GET {path} HTTP/1.1", "Upgrade: websocket", "Connection: Upgrade"]
    lines += [] if host is False else [f"Host: {host}"]
    lines += [] if origin is False else [f"Origin: {origin}"]
    lines += [] if not cookie else [f"Cookie: {cookie}"]
    key = base64.b64encode(os.urandom(16)).decode() if key is None else key
    lines += [] if key is False else [f"Sec-WebSocket-Key: {key}"]
    lines += ["Sec-WebSocket-Version: 13", *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def ws_frame(payload, opcode=1, fin=True, mask=True, rsv=0, length=None):
    """One websocket frame as a client sends it (masked), or not quite (RFC 6455, 5.2)."""
    size = len(payload) if length is None else length
    head = bytes([(0x80 if fin else 0) | (rsv << 4) | opcode])
    bit = 0x80 if mask else 0
    if size < 126:
        head += bytes([bit | size])
    elif size < 1 << 16:
        head += bytes([bit | 126]) + size.to_bytes(2, "big")
    else:
        head += bytes([bit | 127]) + size.to_bytes(8, "big")
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def ws_open(port, cookie, rcvbuf=None):
    """A raw websocket, its handshake done with the right cookie; fails unless answered 101."""
    conn = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    conn.settimeout(CASE_WAIT)
    if rcvbuf is not None:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    conn.connect(("127.0.0.1", port))
    conn.sendall(upgrade(port, cookie))
    answer = b""
    while b"\r\n\r\n" not in answer:
        chunk = conn.recv(4096)
        assert chunk, answer
        answer += chunk
    assert answer.startswith(b"HTTP/1.1 101"), answer
    return conn


def close_to_end(conn):
    """End the sending side and read to the end: the server has done with this client then."""
    with conn:
        try:
            conn.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        to_end(conn)


def http_cases(rng, port, cookie):
    """Yield ``(kind, bytes)``: malformed requests, headers, handshakes, forged Host and Origin."""
    good = f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nCookie: {cookie}\r\n"
    lines = [
        b"GET\r\n\r\n",
        b"GET / HTTP/9.9\r\n\r\n",
        b"GET / HTTP/1.1\n\n",
        b"\r\n" * 300,
        b"GET " + b"/" * 9000 + b" HTTP/1.1\r\n\r\n",
        b"\xff\xfe / HTTP/1.1\r\n\r\n",
        b"GET /\xc3\x28 HTTP/1.1\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
        b"GET / HTTP/1.1\r\nHost: x",  # and nothing more
        b"GET /?token=" + b"%ff" * 900 + b" HTTP/1.1\r\n\r\n",
        b"GET /?token=&token=&&;== HTTP/1.1\r\n\r\n",
        b"GET http://evil.example/ HTTP/1.1\r\n\r\n",
    ]
    headers = [
        "X: y\r\n" * 200,
        "X: " + "y" * 9000 + "\r\n",
        "no colon here\r\n",
        ": empty name\r\n",
        "X: \x00\x01\x7f\r\n",
        "Transfer-Encoding: chunked\r\n",
        "Content-Length: -1\r\n",
        f"Host: 127.0.0.1:{port}\r\n",  # twice
        "Cookie: " + "".join(chr(rng.randrange(32, 256)) for _ in range(300)) + "\r\n",
        f"Cookie: {cookie}; {cookie}x\r\n",
        'Cookie: "\\"\r\n',
    ]
    key = base64.b64encode(b"k" * 16).decode()
    handshakes = [
        upgrade(port, cookie, key=False),
        upgrade(port, cookie, key="not base64!"),
        upgrade(port, cookie, key=base64.b64encode(b"short").decode()),
        upgrade(port, cookie, extra=["Sec-WebSocket-Version: 13", f"Sec-WebSocket-Key: {key}"]),
        upgrade(port, cookie, path="/ws?x=1&x=2"),
        upgrade(port, cookie, path="/ws/../ws"),
        upgrade(
            port, cookie, extra=["Sec-WebSocket-Extensions: permessage-deflate; x=" + "y" * 4000]
        ),
        upgrade(port, cookie, extra=["Sec-WebSocket-Protocol: " + ",".join(["p"] * 3000)]),
        upgrade(port, cookie, extra=["Upgrade: h2c"]),
        # Right handshake, wrong credentials or a forged Host, Origin.
        upgrade(port, ""),
        upgrade(port, f"autodbg-{port}=" + "x" * 43),
        upgrade(port, cookie.upper()),
        upgrade(port, cookie, origin=False),
        upgrade(port, cookie, origin="null"),
        upgrade(port, cookie, origin="http://evil.example"),
        upgrade(port, cookie, origin=f"http://127.0.0.1:{port + 1}"),
        upgrade(port, cookie, origin=f"http://evil.example:{port}", host=f"evil.example:{port}"),
        upgrade(port, cookie, host=False),
        upgrade(port, cookie, host=f"localhost:{port}", origin=f"http://127.0.0.1:{port}"),
        upgrade(port, cookie, host="127.0.0.1"),
        upgrade(port, cookie, host=f"127.0.0.1:{port}\r\nHost: evil.example"),
    ]
    kinds = ("random", "request line", "headers", "handshake")
    for n in itertools.count():
        kind = kinds[n % len(kinds)]
        if kind == "random":
            data = noise(rng, rng.randrange(0, 3000))
        elif kind == "request line":
            data = rng.choice(lines)
        elif kind == "headers":
            picked = rng.sample(headers, rng.randrange(1, 4))
            data = (good + "".join(picked) + "\r\n").encode("latin-1", "replace")
        else:
            data = rng.choice(handshakes)
        yield kind, data


def defused(message):
    """``message`` with a text that debugger commands cannot come out of: each line a comment.

    A junk text such as ``"q\u2000..."`` would be pdb's ``q``: the fuzz sends
    messages of every shape, the user's commands are the user's to type.
    """
    if isinstance(message.get("text"), str):
        parts = re.split(r"([\r\n])", message["text"])
        message["text"] = "".join(p if p in ("\r", "\n") else "#" + p for p in parts)
    return message


def json_junk(rng, template):
    """A message: the template's fields mutated, or JSON that is not an object, or not JSON."""
    roll = rng.random()
    if roll < 0.6:
        return json.dumps(defused(mutated(rng, template))).encode()
    if roll < 0.7:
        return json.dumps(junk(rng)).encode()
    if roll < 0.8:
        return b"[" * rng.choice([1000, 60000])  # deeper than json's recursion
    if roll < 0.9:
        return noise(rng, rng.randrange(0, 200))
    return json.dumps(defused(mutated(rng, template))).encode()[: rng.randrange(0, 40)]


def ws_cases(rng, templates):
    """Yield ``(kind, [frames])``: what a page with the right cookie sends on its websocket.

    ``templates`` are the endpoint's messages, with harmless values: the fuzz
    mutates their fields (types, presence) and adds unknown ones.
    """
    kinds = ("messages", "binary", "oversized", "bad frames", "vanish")
    for n in itertools.count():
        kind = kinds[n % len(kinds)]
        if kind == "messages":
            frames = [ws_frame(json_junk(rng, rng.choice(templates))) for _ in range(8)]
        elif kind == "binary":
            frames = [ws_frame(json_junk(rng, rng.choice(templates)), opcode=2)]
        elif kind == "oversized":  # beyond MAX_MESSAGE, at once or in fragments
            big = b'{"type": "command", "text": "#' + b"y" * 70000 + b'"}'
            frames = rng.choice(
                [
                    [ws_frame(big)],
                    [ws_frame(big[:40000], fin=False), ws_frame(big[40000:], opcode=0)],
                    [ws_frame(b"", length=2**40)],
                ]
            )
        elif kind == "bad frames":
            frames = [
                rng.choice(
                    [
                        ws_frame(b'{"type": "x"}', mask=False),
                        ws_frame(b"x", opcode=rng.choice([3, 7, 11, 15])),
                        ws_frame(b"x", rsv=rng.randrange(1, 8)),
                        ws_frame(b"\xff\xfe\xc3\x28", opcode=1),  # not UTF-8
                        ws_frame(b"x" * 200, opcode=9),  # a ping too long
                        ws_frame(b"\x03\xe7", opcode=8),  # a close with a bad code
                        ws_frame(b"x", opcode=0),  # a continuation of nothing
                        noise(rng, rng.randrange(1, 400)),
                    ]
                )
            ]
        else:  # a message cut in the middle, then gone
            whole = ws_frame(json.dumps(rng.choice(templates)).encode())
            frames = [whole[: rng.randrange(1, len(whole))]]
        yield kind, frames


def throw_ws(port, cookie, frames):
    """Open a websocket with the right cookie, send ``frames``, end; return what came."""
    conn = ws_open(port, cookie)
    try:
        for part in frames:
            conn.sendall(part)
    except OSError:
        pass  # closed on a bad frame before the rest went
    close_to_end(conn)


def select_f(page):
    """Select f()'s frame (fuzzed frame messages move it); return when the page shows it."""
    page.until(lambda: page.state is not None, "the state")
    index = [frame["function"] for frame in page.state["stack"]].index("f")
    if page.state["current"] != index:
        page.ws.send(json.dumps({"type": "frame", "index": index}))
        page.until(lambda: page.state["current"] == index, "f() selected")


class WebPage:
    """A good page of the session: its output and its last state."""

    def __init__(self, websocket):
        self.ws = websocket
        self.output = ""
        self.state = None

    def until(self, predicate, what, timeout=CASE_WAIT):
        deadline = time.monotonic() + timeout
        while not predicate():
            left = deadline - time.monotonic()
            assert left > 0, f"timed out waiting for {what}; output:\n{self.output[-2000:]}"
            message = json.loads(self.ws.recv(left))
            if message["type"] == "output":
                self.output += message["text"]
            elif message["type"] == "state":
                self.state = message


def ws_client(port, cookie):
    return ws_connect(
        f"ws://127.0.0.1:{port}/ws",
        origin=f"http://127.0.0.1:{port}",
        additional_headers={"Cookie": cookie},
        open_timeout=CASE_WAIT,
    )


def assert_page_serves(proc, port, cookie):
    """The process lives, its page answers, and a good tab runs a command and sees the answer."""
    assert proc.popen.poll() is None, proc.output
    assert http_get(port, "/", {"Cookie": cookie})[0] == 200
    with ws_client(port, cookie) as websocket:
        page = WebPage(websocket)
        select_f(page)
        page.ws.send(json.dumps({"type": "command", "text": "p secret * 1111"}))
        page.until(lambda: "46662" in page.output, "46662")


def fuzz_web(endpoint, port, cookie, templates, after_batch, budget=75.0, per_kind=40):
    """Throw HTTP then websocket cases at ``port``, ``per_kind`` of each kind; check after each.

    Returns:
        dict: how many cases of each kind ran.
    """
    rng = random.Random(SEED)
    ran = {}
    deadline = time.monotonic() + budget
    batches = [
        (4, http_cases(rng, port, cookie), throw_http),
        (5, ws_cases(rng, templates), lambda port, frames: throw_ws(port, cookie, frames)),
    ]
    for kinds, cases, send in batches:
        for kind, data in itertools.islice(cases, kinds * per_kind):
            if time.monotonic() > deadline:
                break
            try:
                send(port, data)
            except TimeoutError:
                raise AssertionError(f"{endpoint}: a {kind} client kept {CASE_WAIT} s") from None
            ran[kind] = ran.get(kind, 0) + 1
        after_batch()
    print(f"fuzz: {endpoint}: {sum(ran.values())} cases {ran}")
    return ran


def throw_http(port, data):
    with socket.create_connection(("127.0.0.1", port), timeout=CASE_WAIT) as conn:
        try:
            conn.sendall(data)
        except OSError:
            pass
        close_to_end(conn)


@pytest.mark.timeout(240)
def test_fuzzed_web_session(env, start):
    proc, port, _, cookie = web_session(start, env)
    templates = [
        {"type": "command", "text": "#" + "x" * 10},
        {"type": "command", "text": "#a\n#b\n"},
        {"type": "frame", "index": 0},
        # (No "interrupt": a Ctrl-C between the fuzz's quick commands may land in the
        # debugger's own code, as a Ctrl-C typed on a terminal would.)
        {"type": "unknown", "text": "p 1"},
    ]
    ran = fuzz_web(
        "session page", port, cookie, templates, lambda: assert_page_serves(proc, port, cookie)
    )
    assert sum(ran.values()) >= 90
    assert proc.output.count("Traceback (most recent call last)") == 1, proc.output


def test_a_page_that_never_reads_is_dropped(env, start):
    # Its socket's buffers full, the tab's sender waits SEND_WAIT s for it, then drops
    # it; the other tab and the session go on meanwhile.
    proc, port, _, cookie = web_session(start, env)
    stuck = ws_open(port, cookie, rcvbuf=4096)
    with ws_client(port, cookie) as websocket:
        page = WebPage(websocket)
        select_f(page)
        page.ws.send(json.dumps({"type": "command", "text": "print('x' * 3_000_000, 'do' + 'ne')"}))
        page.until(lambda: "done" in page.output, "the long line", timeout=60)
        proc.wait_for(f"web: dropped a page: it took no output for {SEND_WAIT:g} s", 60)
        page.ws.send(json.dumps({"type": "command", "text": "p secret * 1111"}))
        page.until(lambda: "46662" in page.output, "46662")
    stuck.settimeout(CASE_WAIT)
    to_end(stuck)  # closed by the session: the end comes after what was sent
    stuck.close()


def test_silent_half_open_and_many_web_clients(env, start):
    proc, port, _, cookie = web_session(start, env)
    # 60 clients at once: silent ones, ones that stop in the middle of their request or of
    # a frame, tabs that never send a word; meanwhile a good tab works.
    half = f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nCook".encode()
    clients = []
    for n in range(60):
        if n % 3 == 2:
            conn = ws_open(port, cookie)
            if n % 2:
                conn.sendall(ws_frame(b'{"type": "command", "text": "#x"}')[:7])
        else:
            conn = socket.create_connection(("127.0.0.1", port), timeout=CASE_WAIT)
            if n % 3 == 1:
                conn.sendall(half)
        clients.append(conn)
    assert_page_serves(proc, port, cookie)
    # The ones still in their handshake are closed by the server (its open_timeout).
    for n, conn in enumerate(clients[:9]):
        if n % 3 != 2:
            to_end(conn)
    for conn in clients:
        conn.close()
    assert_page_serves(proc, port, cookie)


DASH_URL = re.compile(r"dashboard: open http://127\.0\.0\.1:(\d+)/\?token=([A-Za-z0-9_-]+)")


def dashboard(start, env, runtime_dir):
    """A crashed rank of job ``abuse`` in socket mode and ``autodbg web``; return both, and more.

    Returns:
        tuple: (the rank's Proc, the dashboard's Proc, port, cookie, the session's key).
    """
    env.update(AUTODBG_MODE="socket", AUTODBG_WAIT="600", TORCHELASTIC_RUN_ID="abuse")
    proc = start([PYTHON, target("crash.py")], dict(env, RANK="0", LOCAL_RANK="0", WORLD_SIZE="1"))
    wait_for_record(runtime_dir, pid=proc.pid, state="waiting")
    web = start([AUTODBG, "web", "--job", "abuse"], env)
    web.wait_for("?token=")
    port, token = DASH_URL.search(web.output).groups()
    return proc, web, int(port), webpage.cookie(int(port), token), f"{HERE}:{proc.pid}"


class DashPage:
    """A good page of the dashboard: its last table and its consoles' text."""

    def __init__(self, websocket):
        self.ws = websocket
        self.table = None
        self.consoles = {}
        self.ended = set()

    def until(self, predicate, what, timeout=CASE_WAIT):
        deadline = time.monotonic() + timeout
        while not predicate():
            left = deadline - time.monotonic()
            assert left > 0, f"timed out waiting for {what}: {self.table} {self.consoles}"
            message = json.loads(self.ws.recv(left))
            if message["type"] == "table":
                self.table = message
            elif message["type"] == "console":
                key = message["key"]
                self.consoles[key] = self.consoles.get(key, "") + message["text"]
            elif message["type"] == "console-end":
                self.ended.add(message["key"])

    def send(self, **message):
        self.ws.send(json.dumps(message))

    def listed(self, pid):
        return self.table and pid in {s["pid"] for s in self.table["sessions"]}


def assert_dashboard_serves(web, proc, port, cookie, key, env):
    """The dashboard answers its page, lists the session and opens its console; then the CLI attaches."""
    assert web.popen.poll() is None, web.output
    assert proc.popen.poll() is None, proc.output
    assert http_get(port, "/", {"Cookie": cookie})[0] == 200
    # The fuzz's consoles may hold the session a moment longer than its pages.
    wait_for_record(env["AUTODBG_DIR"], timeout=CASE_WAIT, pid=proc.pid, state="waiting")
    with ws_client(port, cookie) as websocket:
        page = DashPage(websocket)
        page.until(lambda: page.listed(proc.pid), "the session listed")
        page.send(type="open", key=key)
        page.send(type="input", key=key, text="p secret * 1111")
        page.until(lambda: "46662" in page.consoles.get(key, ""), "46662 in the console")
        page.send(type="close", key=key)
        page.until(lambda: key in page.ended, "the console's end")
    assert_attachable(env, proc)


@pytest.mark.timeout(300)
def test_fuzzed_dashboard(env, runtime_dir, start):
    proc, web, port, cookie, key = dashboard(start, env, runtime_dir)
    templates = [
        {"type": "stacks"},
        {"type": "cast", "ranks": "all", "command": "secret * 2"},
        {"type": "open", "key": key},
        {"type": "open", "key": "elsewhere:1"},
        {"type": "input", "key": key, "text": "#x"},
        {"type": "close", "key": key},
        {"type": "table"},
    ]
    ran = fuzz_web(
        "dashboard",
        port,
        cookie,
        templates,
        lambda: assert_dashboard_serves(web, proc, port, cookie, key, env),
        budget=150,
    )
    assert sum(ran.values()) >= 90
    assert "Traceback" not in web.output, web.output


def test_a_dashboard_page_that_never_reads_is_dropped(env, runtime_dir, start):
    # A page that opens a console, has a command print a lot, and reads nothing: the
    # dashboard drops it after SEND_WAIT s; meanwhile the other pages get their tables.
    proc, web, port, cookie, key = dashboard(start, env, runtime_dir)
    with ws_client(port, cookie) as websocket:
        page = DashPage(websocket)
        page.until(lambda: page.listed(proc.pid), "the session listed")
        stuck = ws_open(port, cookie, rcvbuf=4096)
        stuck.sendall(ws_frame(json.dumps({"type": "open", "key": key}).encode()))
        command = "!for i in range(3000): print('x' * 1000)"
        stuck.sendall(ws_frame(json.dumps({"type": "input", "key": key, "text": command}).encode()))
        # After SEND_WAIT s without progress, or sooner when the output's small messages
        # fill its backlog (how fast the relay reads decides which comes first).
        web.wait_for("web: dropped a page: it", 60)
        # A crash later is listed on the good page.
        later = start([PYTHON, target("crash.py")], dict(env, RANK="1", WORLD_SIZE="2"))
        page.until(lambda: page.listed(later.pid), "the later crash listed", timeout=60)
        stuck.close()
    assert_dashboard_serves(web, proc, port, cookie, key, env)


def refusals_told(output, line):
    """How many refusals the lines with ``line`` account for: one each, plus the counts left out."""
    told = 0
    for text in output.splitlines():
        if line in text:
            more = re.search(r"\((\d+) more refused in the last [\d.]+ s\)$", text)
            told += 1 + (int(more.group(1)) if more else 0)
    return told


@pytest.mark.parametrize("endpoint", ["tcp", "web"])
@pytest.mark.timeout(120)
def test_a_flood_of_refused_clients_is_a_few_lines(tcp_env, runtime_dir, start, endpoint):
    # Each refusal alone is one line; 40 of them in a burst are REFUSALS_SHOWN lines, then
    # one that counts the ones left out, when the window ends: all 40 accounted for.
    flood = 40
    if endpoint == "tcp":
        proc, record = crashed(start, tcp_env, runtime_dir)
        host, _, port = record["tcp"].rpartition(":")
        line = "refused a TCP client from 127.0.0.1"
        for _ in range(flood):
            throw((host, int(port)), b"HELLO?\n", AUTH_WAIT + CASE_WAIT)
    else:
        proc, port, token, cookie = web_session(start, tcp_env)
        line = "web: refused a request from 127.0.0.1"
        for _ in range(flood):
            assert http_get(port, f"/?token={'x' * len(token)}")[0] == 403
    wait_until(lambda: refusals_told(proc.output, line) == flood, 60, f"{flood} refusals told")
    lines = [text for text in proc.output.splitlines() if line in text]
    windows = 1 + sum("more refused" in text for text in lines)
    assert len(lines) <= windows * (messages.REFUSALS_SHOWN + 1) < flood, lines
    assert "more refused in the last 10 s)" in lines[-1], lines
    if endpoint == "tcp":
        assert_attachable(tcp_env, proc)
    else:
        assert_page_serves(proc, port, cookie)
