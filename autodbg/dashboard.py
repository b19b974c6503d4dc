"""``autodbg web``: one local page for the whole job (the CLI side; heavy imports are fine here).

One HTTP and websocket server (:func:`websockets.sync.server.serve`) on
``127.0.0.1`` (or ``AUTODBG_LISTEN``'s address), at a port the kernel picks
or ``--port``. It prints one line with its URL and a fresh token
(:func:`secrets.token_urlsafe`, 256 bits) and authenticates every request as
a session's page does (:class:`autodbg.backends.web.Gate`: token, then an
``HttpOnly``, ``SameSite=Strict`` cookie; ``Host`` and ``Origin`` checked;
403 and one line otherwise).

The page gets, over its websocket (JSON objects, one a message):

* ``{"type": "table", "sessions": [...], "processes": [...]}``: the job's
  session records (what ``autodbg ls`` lists) and live processes
  (:func:`autodbg.stacks.processes`), sent when the page opens and again
  whenever they change (the registry is read every :data:`POLL` seconds);
* ``{"type": "stacks"|"cast", "text": ...}``: the output of ``autodbg stack
  --all`` or ``autodbg cast RANKS COMMAND`` (run as subprocesses of this
  Python), answering ``{"type": "stacks"}`` or ``{"type": "cast", "ranks",
  "command"}``;
* ``{"type": "console", "key": "HOST:PID", "text": ...}`` and ``{"type":
  "console-end", "key"}``: a session's console, which ``{"type": "open",
  "key"}`` opens (a line client, as ``autodbg attach -c`` is: on this host
  through the session's Unix socket, :func:`autodbg.client.connect`; on
  another host through ``autodbg attach --pid N --job J`` run there by
  :mod:`autodbg.transport`), ``{"type": "input", "key", "text"}`` feeds a
  line and ``{"type": "close", "key"}`` ends. The session accepts one
  client at a time: a busy one answers with its own line, shown as is.
"""

import json
import logging
import os
import secrets
import socket
import subprocess
import sys
import threading
import time

from websockets.exceptions import ConnectionClosed
from websockets.sync.server import serve

from autodbg import client, config, stacks, transport
from autodbg.backends import web

PAGE = web.PAGE
ASSETS = {
    "/": ("dashboard.html", "text/html; charset=utf-8"),
    "/dashboard.js": ("dashboard.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
}
POLL = 0.5  # seconds between two readings of the registry
RUN_TIMEOUT = 30.0  # seconds: bound on a `stack --all` or `cast` run for a page
READY_TIMEOUT = 10.0  # seconds a session has to answer a console's handshake
MAX_RUNS = 4  # `stack --all` and `cast` runs going at once, for all the pages
CLOSE_WAIT = 1.0  # seconds the end (Ctrl-C) waits for the pages to see the close
FIELDS = ("job", "rank", "world_size", "host", "pid", "state", "exception", "where", "started")


def table(args, job):
    """Return the job's sessions and live processes, as the page shows them.

    Args:
        args (argparse.Namespace): ``job`` and ``store``, as ``autodbg ls`` takes them.
        job (autodbg.cli.JobView): the CLI's discovery of the job.

    Returns:
        dict: ``{"type": "table", "sessions": [...], "processes": [...]}``; a
        session's ``key`` is ``HOST:PID``; ``started`` and ``registered`` are
        Unix times (the page shows ages).

    Raises:
        autodbg.cli.CliError: the runtime directory is unsafe, or ``--store`` unreachable.
    """
    here = os.uname().nodename
    sessions = []
    for record in job.sessions():
        row = {field: record.get(field) for field in FIELDS}
        row["host"] = row["host"] or here
        row["key"] = f"{row['host']}:{row['pid']}"
        sessions.append(row)
    processes = [
        {
            "job": p.get("job"),
            "rank": p.get("rank"),
            "host": here,
            "pid": p.get("pid"),
            "registered": p.get("registered"),
        }
        for p in stacks.processes(job.runtime_dir(), args.job)
    ]
    return {"type": "table", "sessions": sessions, "processes": processes}


class _Page:
    """One page's websocket: what is sent to it (from several threads) and its consoles."""

    def __init__(self, connection):
        self.connection = connection
        # Its own sending thread and queue (web.Tab): a page that reads nothing delays
        # neither the registry's poller nor the consoles, and is dropped (SEND_WAIT).
        self.tab = web.Tab(connection)
        self.consoles = {}

    def send(self, data):
        """Queue ``data`` (JSON) for the page; never blocks."""
        self.tab.put(json.dumps(data))


class _Console:
    """A line client of one session, relayed to a page: a socket here, a transport pipe elsewhere."""

    def __init__(self, page, key, record, job):
        self.page, self.key = page, key
        self._sock = self._proc = None
        node = job.node_elsewhere(record)
        if node is None:
            self._sock = client.connect(record)
            client._hello(self._sock, client.HANDSHAKE + b" line\n")
            try:
                rest = client._read_ready(self._sock, READY_TIMEOUT)
            except client.AttachError:
                self._sock.close()
                raise
            read = self._sock.recv
        else:
            ask = ["attach", "--pid", str(record["pid"]), "--job", record["job"]]
            argv = transport.command(node["host"], transport.autodbg_argv(node, ask))
            self._proc = subprocess.Popen(
                argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
            )
            rest = b""
            read = self._proc.stdout.read1
        if rest:
            page.send({"type": "console", "key": key, "text": rest.decode("utf-8", "replace")})
        relay = threading.Thread(
            target=self._relay, args=(read,), name="autodbg-dashboard-console", daemon=True
        )
        relay.start()

    def _relay(self, read):
        try:
            while data := read(65536):
                text = data.decode("utf-8", "replace")
                self.page.send({"type": "console", "key": self.key, "text": text})
        except OSError:
            pass
        self.page.consoles.pop(self.key, None)
        self.page.send({"type": "console-end", "key": self.key})
        self.close()

    def write(self, line):
        """Send one debugger command (a line) to the session."""
        data = (line.rstrip("\n") + "\n").encode("utf-8", "replace")  # a lone surrogate: ?
        try:
            if self._sock is not None:
                self._sock.sendall(data)
            else:
                self._proc.stdin.write(data)
                self._proc.stdin.flush()
        except OSError:
            pass  # the session ended: the relay reports it

    def close(self):
        """End this client (the session waits for the next one); never blocks."""
        try:
            if self._sock is not None:
                self._sock.shutdown(socket.SHUT_WR)
            elif self._proc.stdin and not self._proc.stdin.closed:
                self._proc.stdin.close()
        except OSError:
            pass


class Dashboard:
    """The dashboard's server: pages, the registry's poller, consoles.

    Args:
        args (argparse.Namespace): ``job``, ``store``, ``port``.
        job (autodbg.cli.JobView): the CLI's discovery of the job.

    Raises:
        OSError: the address cannot be listened on.
    """

    def __init__(self, args, job):
        self.args = args
        self.job = job
        # As a session's page takes it (autodbg.clients): an address, no port.
        host = (config.current().listen or "127.0.0.1").removeprefix("[").removesuffix("]")
        self.host = host
        self.token = secrets.token_urlsafe(32)
        self.pages = set()
        self._lock = threading.Lock()
        self._runs = threading.BoundedSemaphore(MAX_RUNS)
        self._table = None
        quiet = logging.getLogger("autodbg.dashboard")
        quiet.addHandler(logging.NullHandler())
        quiet.propagate = False
        self.server = serve(
            self._serve_page,
            host,
            args.port,
            process_request=self._check,
            server_header=None,
            max_size=web.MAX_MESSAGE,
            compression=None,
            create_connection=web.Connection,  # bounded sends
            logger=quiet,
        )
        port = self.server.socket.getsockname()[1]
        self.gate = web.Gate(host, os.uname().nodename, port, self.token)

    def _check(self, connection, request):
        refused = self.gate.check(connection, request)
        if refused is not None or request.path.split("?")[0] == "/ws":
            return refused
        return web.asset(connection, request, PAGE, ASSETS)

    def run(self):
        """Print the URL line, serve until Ctrl-C (KeyboardInterrupt, raised to the caller)."""
        if self.gate.public:
            print(
                f"autodbg: the dashboard listens on {self.host} (AUTODBG_LISTEN): anyone who "
                "can reach that address may try it; the token keeps them out",
                file=sys.stderr,
            )
        print(f"autodbg: dashboard: open {self.gate.url}?token={self.token}", flush=True)
        threading.Thread(target=self._poll, name="autodbg-dashboard-poll", daemon=True).start()
        serving = threading.Thread(target=self._accept, name="autodbg-dashboard", daemon=True)
        serving.start()
        try:
            while serving.is_alive():
                serving.join(1.0)
        finally:
            self._close()

    def _accept(self):
        # serve_forever()'s loop, but with daemon threads (as autodbg.backends.web's): the
        # library's are not, and its shutdown() waits for every one, so a tab that never
        # answers the close, or a client that never ends its handshake, would hold Ctrl-C's
        # exit for the library's timeouts (10 s each).
        listener = self.server.socket
        while True:
            try:
                sock, address = listener.accept()
            except OSError:
                if listener.fileno() == -1:
                    return  # closed: the dashboard ends
                time.sleep(0.1)  # out of descriptors, say: let a client end first
                continue
            threading.Thread(
                target=self.server.handler,
                args=(sock, address),
                name="autodbg-dashboard-client",
                daemon=True,
            ).start()

    def _close(self):
        # Consoles first (each session then waits for its next client), then the pages'
        # closing handshakes, all at once and for CLOSE_WAIT seconds at most.
        self.server.socket.close()
        with self._lock:
            pages = list(self.pages)
        closing = []
        for page in pages:
            for console in list(page.consoles.values()):
                console.close()
            closer = threading.Thread(
                target=page.connection.close, name="autodbg-dashboard-close", daemon=True
            )
            closer.start()
            closing.append(closer)
        deadline = time.monotonic() + CLOSE_WAIT
        for closer in closing:
            closer.join(max(0.0, deadline - time.monotonic()))

    def _poll(self):
        while True:
            try:
                current = table(self.args, self.job)
            except Exception as error:  # the page says it; the next poll may do better
                current = {"type": "table", "sessions": [], "processes": [], "error": str(error)}
            if current != self._table:
                self._table = current
                with self._lock:
                    pages = list(self.pages)
                for page in pages:
                    page.send(current)
            time.sleep(POLL)  # a poll's period, not a wait for something to happen

    def _serve_page(self, connection):
        page = _Page(connection)
        with self._lock:
            self.pages.add(page)
        if self._table is not None:
            page.send(self._table)
        try:
            for message in connection:
                self._received(page, message)
        except ConnectionClosed:
            pass
        finally:
            with self._lock:
                self.pages.discard(page)
            for console in list(page.consoles.values()):
                console.close()
            page.tab.close()

    def _received(self, page, message):
        try:
            data = json.loads(message)
            kind, key = data["type"], data.get("key")
        except (ValueError, TypeError, KeyError, AttributeError, RecursionError):
            return  # not an object of ours (RecursionError: [[[[...)
        if not isinstance(key, str):
            key = None  # a list or a dict as a key: unhashable, and no session's
        job = ["--job", self.args.job] if self.args.job else []
        job += ["--store", self.args.store] if self.args.store else []
        if kind == "stacks":
            self._run(page, "stacks", ["stack", "--all", *job])
        elif kind == "cast" and isinstance(data.get("ranks"), str):
            # After "--", what a page sends is never an option (``--store``...).
            command = str(data.get("command", ""))
            self._run(page, "cast", ["cast", *job, "--", data["ranks"], command])
        elif kind == "open" and key is not None:
            self._open(page, key)
        elif kind == "input" and key in page.consoles:
            page.consoles[key].write(str(data.get("text", "")))
        elif kind == "close" and key in page.consoles:
            page.consoles.pop(key).close()

    def _open(self, page, key):
        here = os.uname().nodename
        try:
            records = [
                r for r in self.job.sessions() if f"{r.get('host') or here}:{r['pid']}" == key
            ]
        except self.job.Error as error:
            page.send({"type": "console", "key": key, "text": f"autodbg: {error}\n"})
            return
        if key in page.consoles or not records:
            why = "already open here" if key in page.consoles else "no such session (any more)"
            page.send({"type": "console", "key": key, "text": f"autodbg: {why}\n"})
            return
        try:
            page.consoles[key] = _Console(page, key, records[0], self.job)
        except (client.AttachError, transport.TransportError, OSError) as error:
            page.send({"type": "console", "key": key, "text": f"autodbg: {error}\n"})
            page.send({"type": "console-end", "key": key})

    def _run(self, page, kind, ask):
        # On a thread of its own: the page's consoles go on meanwhile. MAX_RUNS at once:
        # a page that asks again and again gets told, instead of a process each time.
        if not self._runs.acquire(blocking=False):
            text = f"autodbg: {MAX_RUNS} runs are going already; try again when one ends\n"
            page.send({"type": kind, "text": text})
            return

        def run():
            try:
                page.send({"type": kind, "text": self._autodbg(ask)})
            finally:
                self._runs.release()

        threading.Thread(target=run, name="autodbg-dashboard-run", daemon=True).start()

    def _autodbg(self, ask):
        try:
            done = subprocess.run(
                [sys.executable, "-m", "autodbg", *ask],
                capture_output=True,
                text=True,
                timeout=RUN_TIMEOUT,
                check=False,  # its status is in its text: the page shows that
            )
        except subprocess.TimeoutExpired:
            return f"autodbg: `autodbg {' '.join(ask)}` did not end within {RUN_TIMEOUT:g} s\n"
        except ValueError as error:  # a NUL or a lone surrogate in what the page sent
            return f"autodbg: cannot run that: {error}\n"
        return done.stdout + done.stderr


def main(args, job):
    """Run ``autodbg web`` (see the module's docstring); blocks until Ctrl-C.

    Args:
        args (argparse.Namespace): the verb's arguments.
        job (autodbg.cli.JobView): the CLI's discovery of the job.

    Returns:
        int: 0 after Ctrl-C.

    Raises:
        autodbg.cli.CliError: the address cannot be listened on (``job.Error``).
    """
    try:
        dashboard = Dashboard(args, job)
    except OSError as error:
        raise job.Error(f"the dashboard cannot listen: {error}") from None
    try:
        dashboard.run()
    except KeyboardInterrupt:
        pass
    return 0
