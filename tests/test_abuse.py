"""Endpoints that withstand abuse (issue 9, point 4): fuzzed input, half-open, slow and many clients.

Every endpoint autodbg has besides the web ones: the session's Unix socket,
its TCP listener (the TCP mode), and the CLI's reading of the runtime
directory's files and of the job's store. Each fuzz test uses a fixed seed
and a bounded count and time, prints how many cases it ran, and ends with a
good client attaching to the same debugged process and getting its answer.
"""

import json
import os
import random
import re
import socket
import subprocess
import time

import pytest
from conftest import PYTHON
from harness import BIN, target, wait_for_record, wait_until

from autodbg import keys, registry, stacks
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
    out = cli(env, "attach", str(proc.pid), "-c", "p secret * 1111")
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
    stuck.close()


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
