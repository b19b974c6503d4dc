"""AUTODBG_MODE=dap: a post-mortem that a DAP client (VS Code through debugpy) attaches to.

The client is written here, over a TCP socket with the protocol's
``Content-Length`` framing, and asks what VS Code asks: initialize, attach,
configurationDone, then threads, stackTrace, scopes, variables, evaluate and
disconnect.
"""

import json
import os
import re
import socket
import subprocess

import psutil
import pytest
from conftest import PYTHON
from harness import BIN, records, target, wait_for_record

pytest.importorskip("debugpy")

AUTODBG = os.path.join(BIN, "autodbg")
LINE = re.compile(r"autodbg: .*DAP \(VS Code\) session on 127\.0\.0\.1:(\d+).*attach with (\{.*\})")


class DapClient:
    """A Debug Adapter Protocol client over TCP, enough for the tests: requests, responses, events.

    Every message received is kept, so that a response or an event is found
    whatever came before it; an error response fails the test at once.

    Args:
        port (int): the adapter's port on loopback.
        timeout (float): seconds any one read may wait.
    """

    def __init__(self, port, timeout=30):
        self._sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self._buffer = b""
        self._seq = 0
        self.messages = []  # every message received so far, in order

    def close(self):
        self._sock.close()

    def send(self, command, **arguments):
        """Send a request; return its sequence number."""
        self._seq += 1
        body = json.dumps(
            {"seq": self._seq, "type": "request", "command": command, "arguments": arguments}
        ).encode()
        self._sock.sendall(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        return self._seq

    def request(self, command, **arguments):
        """Send a request and return its response's body."""
        return self.response(self.send(command, **arguments))

    def response(self, seq):
        """Wait for the response to request ``seq``; return its body."""
        return self._wait(lambda m: m["type"] == "response" and m["request_seq"] == seq)

    def event(self, name):
        """Wait for the event ``name`` (or find it among those received); return its body."""
        return self._wait(lambda m: m["type"] == "event" and m["event"] == name)

    def _wait(self, wanted):
        seen = 0
        while True:
            for message in self.messages[seen:]:
                if message["type"] == "response":
                    assert message["success"], message
                if wanted(message):
                    return message.get("body") or {}
            seen = len(self.messages)
            self._receive()

    def _receive(self):
        while b"\r\n\r\n" not in self._buffer:
            self._buffer += self._read()
        head, _, rest = self._buffer.partition(b"\r\n\r\n")
        length = int(re.search(rb"Content-Length: *(\d+)", head, re.IGNORECASE).group(1))
        while len(rest) < length:
            rest += self._read()
        self._buffer = rest[length:]
        self.messages.append(json.loads(rest[:length]))

    def _read(self):
        chunk = self._sock.recv(65536)
        assert chunk, f"the adapter closed the connection; received: {self.messages}"
        return chunk


def dap_session(start, env, runtime_dir):
    proc = start([PYTHON, target("dap_crash.py")], env)
    proc.wait_for("DAP (VS Code) session on")
    found = LINE.search(proc.output)
    assert found, proc.output
    return proc, int(found.group(1)), json.loads(found.group(2))


@pytest.mark.timeout(120)
@pytest.mark.parametrize("debugpy_api", ["public", "pydevd"])
def test_dap_client_reads_the_failing_frame(start, env, runtime_dir, tmp_path, debugpy_api):
    env = dict(env, AUTODBG_MODE="dap")
    if debugpy_api == "pydevd":
        # As debugpy before 1.8.22, without trigger_exception_handler: pydevd's own stop.
        (tmp_path / "sitecustomize.py").write_text(
            "import debugpy\ndel debugpy.trigger_exception_handler\n"
        )
        env["PYTHONPATH"] = str(tmp_path)
    proc, port, entry = dap_session(start, env, runtime_dir)
    assert entry == {
        "type": "debugpy",
        "request": "attach",
        "connect": {"host": "127.0.0.1", "port": port},
    }
    record = wait_for_record(runtime_dir, pid=proc.pid, state="waiting")
    assert record["dap"] == f"127.0.0.1:{port}" and record["socket"] is None
    assert record["exception"] == "ValueError: the answer is not 41"
    listed = subprocess.run([AUTODBG, "ls"], env=env, capture_output=True, text=True, timeout=30)
    assert f"waiting (DAP 127.0.0.1:{port})" in listed.stdout
    refused = subprocess.run(
        [AUTODBG, "attach", str(proc.pid)], env=env, capture_output=True, text=True, timeout=30
    )
    assert refused.returncode == 1
    assert f"is a DAP session: attach VS Code (debugpy) to 127.0.0.1:{port}" in refused.stderr

    client = DapClient(port)
    try:
        client.request(
            "initialize",
            clientID="autodbg-test",
            adapterID="debugpy",
            linesStartAt1=True,
            columnsStartAt1=True,
            pathFormat="path",
        )
        attach = client.send("attach", justMyCode=True)
        client.event("initialized")
        client.request("configurationDone")
        client.response(attach)
        stopped = client.event("stopped")
        assert stopped["reason"] == "exception"
        wait_for_record(runtime_dir, pid=proc.pid, state="attached")

        threads = client.request("threads")["threads"]
        assert stopped["threadId"] in [t["id"] for t in threads]
        stack = client.request("stackTrace", threadId=stopped["threadId"])["stackFrames"]
        top = stack[0]
        assert (top["name"], top["line"]) == ("f", 6)
        assert top["source"]["path"] == target("dap_crash.py")
        assert [f["line"] for f in stack] == [6, 9]  # the whole stack: f, then <module>

        scopes = client.request("scopes", frameId=top["id"])["scopes"]
        local = next(s for s in scopes if s["name"] == "Locals")
        variables = client.request("variables", variablesReference=local["variablesReference"])
        assert {v["name"]: v["value"] for v in variables["variables"]}["answer"] == "41"
        result = client.request(
            "evaluate", expression="answer + 1", frameId=top["id"], context="repl"
        )
        assert result["result"] == "42"

        client.request("disconnect")
    finally:
        client.close()
    assert proc.wait(30) == 1
    assert proc.output.count("Traceback (most recent call last)") == 1
    assert proc.output.count("ValueError: the answer is not 41") == 2  # traceback + the line
    assert "Debugger warning" not in proc.output


@pytest.mark.timeout(60)
def test_no_client_within_the_wait(start, env, runtime_dir):
    proc = start([PYTHON, target("dap_crash.py")], dict(env, AUTODBG_MODE="dap", AUTODBG_WAIT="2"))
    proc.wait_for("DAP (VS Code) session on")
    port = int(LINE.search(proc.output).group(1))
    # debugpy's adapter is a daemon of its own (reparented to init): found by its port.
    (pid,) = {
        c.pid
        for c in psutil.net_connections("tcp")
        if c.laddr.port == port and c.status == "LISTEN"
    }
    adapter = psutil.Process(pid)
    assert "debugpy" in " ".join(adapter.cmdline())
    proc.wait_for("no DAP client came within 2 s; the session ends")
    assert proc.wait(30) == 1
    # It goes with the program.
    _, alive = psutil.wait_procs([adapter], timeout=10)
    assert not alive
    assert not [r for r in records(runtime_dir) if r["pid"] == proc.pid]


@pytest.mark.timeout(60)
def test_without_debugpy_one_line_and_a_socket_session(start, env, runtime_dir, tmp_path):
    (tmp_path / "debugpy.py").write_text("raise ImportError('no debugpy here')\n")
    proc = start(
        [PYTHON, target("dap_crash.py")],
        dict(env, AUTODBG_MODE="dap", PYTHONPATH=str(tmp_path)),
    )
    record = wait_for_record(runtime_dir, pid=proc.pid, state="waiting")
    assert record["socket"] and "dap" not in record
    assert proc.output.count("AUTODBG_MODE=dap needs debugpy: pip install 'autodbg[dap]'") == 1
    proc.wait_for("autodbg attach")
