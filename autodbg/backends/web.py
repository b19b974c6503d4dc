"""The web backend (``AUTODBG_MODE=web``): a session's page and websocket, served inside the process.

The session starts, only then, an HTTP and websocket server (the
``websockets`` library's threaded server, :func:`websockets.sync.server.serve`)
on a daemon thread of its own, ``autodbg-web``, on loopback unless
``AUTODBG_LISTEN`` names another address, at a port the kernel picks. It
prints one line with the page's URL, which carries a random token
(:func:`secrets.token_urlsafe`, 256 bits); the session's record has the URL
without it, and the token is kept in a 0600 file beside the record.

Authentication (the token, then a cookie):

* ``GET /?token=<token>`` answers ``303`` to ``/`` with the token in a cookie
  (``HttpOnly``, ``SameSite=Strict``, named after the port: cookies are not
  kept apart by port, and several sessions may run on one host);
* every other request, the websocket's upgrade (``/ws``) included, needs
  that cookie; tokens are compared with :func:`hmac.compare_digest`;
* every request's ``Host`` must be the address served (``127.0.0.1:PORT``,
  ``localhost:PORT``...: a page of another site that a rebinding DNS name
  points here has another ``Host``), and the websocket's ``Origin`` must be
  the page's own origin;
* a request that fails any of these gets ``403`` and one ``autodbg:`` line,
  never a prompt.

The debugger's I/O is a line channel (:class:`Link`), as ``nc`` gets on the
Unix socket: plain text, one command a line. Several tabs may watch the
session: output goes to all of them, commands come from any. Before each
prompt, in the debugger's thread, the link sends the tabs the debugger's
state as JSON: the stack, the selected frame, the source around its line
and its locals (as :func:`autodbg.stacks.short_repr` gives them).

Messages on the websocket, each one JSON object:

* page to session: ``{"type": "command", "text": ...}`` (several lines run
  as one block of Python, through ``exec``), ``{"type": "frame", "index": N}``
  (select frame N: the link sends ``up``/``down``), ``{"type": "interrupt"}``
  (a Ctrl-C for the command running);
* session to page: ``{"type": "output", "text": ...}``, ``{"type": "state",
  ...}``, ``{"type": "end"}`` when the session ends.
"""

import hmac
import json
import linecache
import logging
import os
import queue
import secrets
import select
import threading
import time
import urllib.parse
from http import cookies

from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Response
from websockets.sync.server import ServerConnection, serve

from autodbg import guard
from autodbg.backends import Channel
from autodbg.backends.socket import SEND_WAIT
from autodbg.messages import refused, say
from autodbg.transport import loopback

PAGE = os.path.join(os.path.dirname(__file__), "web_page")
ASSETS = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
}
SOURCE_CONTEXT = 8  # lines of source shown on each side of the current one
MAX_LOCALS = 200  # locals sent to the page, in name order
MAX_MESSAGE = 1 << 16  # bytes of a message from a page (a command)
MAX_BACKLOG = 1000  # messages queued for a tab that reads nothing; then it is closed
# Characters of output in one message: each message must reach the tab within SEND_WAIT
# seconds (:class:`Connection`), so a tab that takes 64 Ki characters in that time stays.
MAX_OUTPUT = 1 << 16
CLOSE_WAIT = 1.0  # seconds the session's end waits for its last messages to reach the tabs
_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",  # the first URL carries the token
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'self'; connect-src 'self'; frame-ancestors 'none'",
}


def _poll(fds, timeout):
    """Return which of ``fds`` are readable within ``timeout`` seconds (None: no limit)."""
    poller = select.poll()  # not select(): a program may hold more than 1024 descriptors
    for fd in fds:
        poller.register(fd, select.POLLIN)
    wait = None if timeout is None else max(0, int(timeout * 1000))
    return {fd for fd, _ in poller.poll(wait)}


class Server:
    """The page and the websocket of one session, served on the thread ``autodbg-web``.

    Args:
        host (str): the address to listen on (``127.0.0.1``, or ``AUTODBG_LISTEN``'s).
        name (str): the host's name, for the URL when ``host`` is a wildcard address.
        token_file (str): where the token is kept (mode 0600), for the CLI.
        interrupt (Callable[[], None]): raises KeyboardInterrupt in the debugger's thread.

    Raises:
        OSError: the address cannot be listened on, or the token file not written.
    """

    def __init__(self, host, name, token_file, interrupt):
        host = host.removeprefix("[").removesuffix("]")
        self.token = secrets.token_urlsafe(32)
        self.link = Link(interrupt)
        self._token_file = token_file
        self._arrived_r, self._arrived_w = os.pipe()
        quiet = logging.getLogger("autodbg.web")
        if not quiet.handlers:
            quiet.addHandler(logging.NullHandler())
        quiet.propagate = False  # the library's tracebacks of bad clients are not the program's
        self._server = serve(
            self._serve_client,
            host,
            0,
            process_request=self._check,
            server_header=None,
            max_size=MAX_MESSAGE,
            compression=None,
            create_connection=Connection,
            open_timeout=5,
            close_timeout=2,
            logger=quiet,
        )
        self.port = self._server.socket.getsockname()[1]
        self.gate = Gate(host, name, self.port, self.token)
        self.public = self.gate.public
        self.url = self.gate.url
        try:
            fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(self.token + "\n")
        except OSError:
            self._close_sockets()
            for fd in (self._arrived_r, self._arrived_w):
                os.close(fd)
            raise
        self._stop_r, self._stop_w = os.pipe()
        accept = guard.protect("the web server")(self._accept)
        self._thread = threading.Thread(target=accept, name="autodbg-web", daemon=True)
        self._thread.start()

    def accept(self, timeout, wake_r):
        """Wait for a tab to open the websocket; return the link then, else None.

        Blocks up to ``timeout`` seconds, less when ``wake_r`` becomes readable.

        Args:
            timeout (float): seconds.
            wake_r (int): a pipe's reading end that ends the wait early.

        Returns:
            Link | None: the link, with at least one tab, or None.
        """
        if self.link.watching():
            return self.link
        ready = _poll([self._arrived_r, wake_r], timeout)
        if self._arrived_r in ready:
            os.read(self._arrived_r, 512)
        return self.link if self.link.watching() else None

    def close(self):
        """Tell the tabs that the session ended, close them and the server, remove the token file."""
        senders = self.link.end()
        os.write(self._stop_w, b"!")
        self._thread.join(CLOSE_WAIT)
        # Each websocket closes once its last messages are sent: wait for that a moment only.
        deadline = time.monotonic() + CLOSE_WAIT
        for sender in senders:
            sender.join(max(0, deadline - time.monotonic()))
        self._drop_token()
        self._close_sockets()
        for fd in (self._arrived_r, self._arrived_w, self._stop_r, self._stop_w):
            os.close(fd)

    def forget(self):
        """In a forked child, close this process's copies of the descriptors; leave the files."""
        self._close_sockets()
        for fd in (self._arrived_r, self._arrived_w, self._stop_r, self._stop_w):
            os.close(fd)

    def _close_sockets(self):
        # The listener, and the pair by which the library's serve_forever() (not used) is stopped.
        for name in ("socket", "shutdown_watcher", "shutdown_notifier"):
            part = getattr(self._server, name, None)
            if part is not None:
                part.close()

    def _accept(self):
        # serve_forever()'s loop, but with daemon threads named autodbg-*: the library's
        # are not daemons, and a client that never closes would hold up the program's exit.
        listener = self._server.socket
        while True:
            if self._stop_r in _poll([listener.fileno(), self._stop_r], None):
                return
            try:
                client, address = listener.accept()
            except OSError:
                continue  # gone before it was accepted
            serve_one = guard.protect("a web client")(self._server.handler)
            threading.Thread(
                target=serve_one, args=(client, address), name="autodbg-web-client", daemon=True
            ).start()

    def _drop_token(self):
        try:
            os.unlink(self._token_file)
        except FileNotFoundError:
            pass

    def _check(self, connection, request):
        refused = self.gate.check(connection, request)
        if refused is not None or urllib.parse.urlsplit(request.path).path == "/ws":
            return refused
        return asset(connection, request, PAGE, ASSETS)

    @guard.protect("a web client")
    def _serve_client(self, connection):
        tab = Tab(connection)
        self.link.add(tab)
        try:
            os.write(self._arrived_w, b"!")
        except OSError:
            pass  # the session closed meanwhile
        try:
            for message in connection:
                self.link.received(message)
        except ConnectionClosed:
            pass
        finally:
            self.link.remove(tab)


class Gate:
    """The token, cookie, ``Host`` and ``Origin`` checks of a page (this module's, the dashboard's).

    Args:
        host (str): the address listened on (no brackets).
        name (str): the host's name, for the URL when ``host`` is a wildcard address.
        port (int): the port listened on.
        token (str): the page's token.

    Attributes:
        url (str): the page's URL, without the token.
        public (bool): ``host`` is not a loopback address.
    """

    def __init__(self, host, name, port, token):
        self.port = port
        self.token = token
        wildcard = host in ("0.0.0.0", "::", "")
        shown = name if wildcard else host
        shown = f"[{shown}]" if ":" in shown else shown
        # Any name that reaches a wildcard address is fine; else the address served, or localhost.
        self._hosts = None if wildcard else {f"{shown}:{port}"}
        if loopback(host):
            self._hosts |= {f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}"}
        self.public = not loopback(host)
        self.url = f"http://{shown}:{port}/"
        self._cookie = f"autodbg-{port}"

    def check(self, connection, request):
        """Check a request (a ``process_request`` of :func:`websockets.sync.server.serve`).

        Returns:
            Response | None: a 403 (after one ``autodbg:`` line), the 303 that turns
            ``/?token=`` into the cookie, or None: the request may go on (a
            websocket's upgrade, ``/ws``, had its ``Origin`` checked too).
        """
        hosts = request.headers.get_all("Host")
        host = hosts[0] if len(hosts) == 1 else "no Host" if not hosts else repr(hosts)
        if self._hosts is not None and host not in self._hosts:
            return self._refuse(connection, "Host", f"Host {host!r} is not this page's")
        if self._hosts is None and not host.endswith(f":{self.port}"):
            return self._refuse(connection, "Host", f"Host {host!r} is not this page's")
        url = urllib.parse.urlsplit(request.path)
        given = urllib.parse.parse_qs(url.query).get("token")
        if url.path == "/" and given:
            if not hmac.compare_digest(given[0].encode(), self.token.encode()):
                return self._refuse(connection, "wrong token", "wrong token")
            headers = Headers(_HEADERS)
            headers["Location"] = "/"
            headers["Set-Cookie"] = (
                f"{self._cookie}={self.token}; HttpOnly; SameSite=Strict; Path=/"
            )
            headers["Content-Length"] = "0"
            return Response(303, "See Other", headers, b"")
        jar = cookies.SimpleCookie()
        try:
            jar.load("; ".join(request.headers.get_all("Cookie")))
        except cookies.CookieError:
            pass
        held = jar[self._cookie].value if self._cookie in jar else ""
        if not hmac.compare_digest(held.encode(), self.token.encode()):
            return self._refuse(
                connection, "no token", "no valid token (open the URL that autodbg printed)"
            )
        if url.path == "/ws":
            origins = request.headers.get_all("Origin")
            origin = origins[0] if len(origins) == 1 else "no Origin" if not origins else origins
            if origin != f"http://{host}":
                return self._refuse(connection, "Origin", f"websocket from origin {origin!r}")
        return None

    def _refuse(self, connection, reason, why):
        # One line each, until a flood of them (messages.refused): ``reason`` is what they share.
        try:
            peer = "{}:{}".format(*connection.remote_address[:2])
        except (OSError, TypeError, ValueError):
            peer = "a client"
        refused(f"web: {reason}", f"web: refused a request from {peer}: {why}")
        response = connection.respond(403, "Forbidden\n")
        response.headers.update(_HEADERS)
        return response


def asset(connection, request, page, assets):
    """Answer an authenticated request for one of ``assets`` (path: (file name, type)) in ``page``."""
    path = urllib.parse.urlsplit(request.path).path
    if path not in assets:
        response = connection.respond(404, "Not Found\n")
        response.headers.update(_HEADERS)
        return response
    name, kind = assets[path]
    with open(os.path.join(page, name), "rb") as source:
        body = source.read()
    headers = Headers(_HEADERS)
    headers["Content-Type"] = kind
    headers["Content-Length"] = str(len(body))
    return Response(200, "OK", headers, body)


class Connection(ServerConnection):
    """A websocket connection of the library's whose every send ends within :data:`SEND_WAIT` s.

    The library's sends (:meth:`websockets.sync.connection.Connection.send`,
    its HTTP answers, its pings) are ``sendall()`` calls with no time-out,
    under the connection's lock: a client that reads nothing, its socket's
    buffers full, held the sending thread (and the connection) for ever.
    With the socket's time-out, such a send fails with ``TimeoutError``
    and the library closes the connection (``ConnectionClosed``, whose
    ``__cause__`` is that error). Its reads wait for the socket with
    ``select`` first, so the time-out bounds no read. For
    :func:`websockets.sync.server.serve`'s ``create_connection``.
    """

    def __init__(self, sock, *args, **kwargs):
        sock.settimeout(SEND_WAIT)
        super().__init__(sock, *args, **kwargs)


class Tab:
    """One websocket of a page; a thread of its own sends to it, so a slow tab delays nobody.

    What is queued for it waits there (:data:`MAX_BACKLOG` messages at most),
    and each message must be sent within :data:`SEND_WAIT` seconds
    (:class:`Connection`): else the tab is closed, with one line.

    Args:
        connection (Connection): the websocket, open.
    """

    def __init__(self, connection):
        self.connection = connection
        self._out = queue.Queue()
        self._dropped = False  # said so already
        send = guard.protect("a web client's sender")(self._send)
        self.sender = threading.Thread(target=send, name="autodbg-web-send", daemon=True)
        self.sender.start()

    def put(self, message):
        """Queue ``message`` (str, JSON) for the tab; never blocks."""
        if self._out.qsize() < MAX_BACKLOG:
            self._out.put(message)
        elif not self._dropped:  # it reads nothing: the other tabs and the session go on without it
            # Before the sender's time-out, when the output comes in many small messages.
            self._dropped = True
            say(f"web: dropped a page: it left {MAX_BACKLOG} messages unread")
            try:
                self.connection.socket.shutdown(2)  # the sender's send fails, then it closes
            except OSError:
                pass  # gone already

    def close(self):
        """Close the websocket once what is queued is sent (never blocks)."""
        self._out.put(None)

    def _send(self):
        try:
            while (message := self._out.get()) is not None:
                self.connection.send(message)
        except (ConnectionClosed, OSError) as error:
            if isinstance(error.__cause__, TimeoutError) and not self._dropped:
                say(f"web: dropped a page: it took no output for {SEND_WAIT:g} s")
        self.connection.close()


class Link:
    """The debugger's stdin and stdout in web mode: commands from any tab, output to all.

    Args:
        interrupt (Callable[[], None]): raises KeyboardInterrupt in the debugger's thread.
    """

    encoding = "utf-8"

    def __init__(self, interrupt):
        self._interrupt = interrupt
        self._tabs = set()
        self._lock = threading.Lock()
        self._commands = queue.Queue()
        self._reading = False
        self._started = False  # the debugger has asked for a line: its commands may run
        self._state = None  # the last state sent, JSON, for a tab that opens later
        self._current = 0  # the selected frame's index, as last sent
        self.gone = False  # no tab is open (any more): the debugger detaches
        self.channel = Channel("line", self, self)

    def watching(self):
        """Tell whether a tab is open."""
        with self._lock:
            return bool(self._tabs)

    def add(self, tab):
        """Start sending to ``tab`` (a websocket's thread)."""
        with self._lock:
            self._tabs.add(tab)
            self.gone = False
            if self._state is not None:
                tab.put(self._state)

    def remove(self, tab):
        """Stop sending to ``tab``; when it was the last, a waiting prompt reads end of input."""
        with self._lock:
            self._tabs.discard(tab)
            last = not self._tabs
        tab.close()
        if last:
            self._commands.put(None)

    def received(self, message):
        """Take one message from a tab (see the module's docstring); others are ignored."""
        try:
            data = json.loads(message)
            kind = data["type"]
        except (ValueError, TypeError, KeyError, RecursionError):  # RecursionError: [[[[...
            return
        if kind == "command" and isinstance(data.get("text"), str):
            self._commands.put(data["text"])
        elif kind == "frame" and isinstance(data.get("index"), int):
            moves = data["index"] - self._current
            if moves:
                self._commands.put(f"down {moves}" if moves > 0 else f"up {-moves}")
        elif kind == "interrupt" and self._started and not self._reading:
            # Only a command's run: before the first prompt it would end the opening session.
            self._interrupt()

    def end(self):
        """Tell the tabs that the session ended and close them; return their sender threads."""
        self._send({"type": "end"})
        with self._lock:
            tabs, self._tabs = self._tabs, set()
        for tab in tabs:
            tab.close()
        return [tab.sender for tab in tabs]

    def readline(self):
        """Return the next command as a line, or ``""`` when no tab is left.

        Sends the debugger's state first (in the debugger's thread), then
        blocks until a tab sends a command or the last one closes.
        """
        guard.call("the web page's state", self._send_state)
        self._reading = self._started = True
        try:
            while True:
                text = self._commands.get()
                if text is not None:
                    break
                if not self.watching():
                    self.gone = True
                    return ""
        finally:
            self._reading = False
        self.write(text + "\n")  # every tab sees what was typed, in any of them
        if "\n" in text.strip("\n"):
            return f"!exec(compile({text!r}, '<web console>', 'exec'))\n"
        return text.strip("\n") + "\n"

    def write(self, text):
        """Send ``text`` to every tab, :data:`MAX_OUTPUT` characters a message. Returns len(text)."""
        for start in range(0, len(text), MAX_OUTPUT):
            self._send({"type": "output", "text": text[start : start + MAX_OUTPUT]})
        return len(text)

    def flush(self):
        pass

    def isatty(self):
        return False

    def close(self):
        """Nothing: the tabs stay with the server until the session ends (:meth:`Server.close`)."""

    def forget(self):
        """Nothing to close in a forked child: the server's descriptors are the server's."""

    def _send(self, data, keep=False):
        message = json.dumps(data)
        with self._lock:
            if keep:
                self._state = message
            tabs = list(self._tabs)
        for tab in tabs:
            tab.put(message)

    def _send_state(self):
        from autodbg import session

        current = session.current()
        debugger = None if current is None else current.debugger
        if debugger is None or not getattr(debugger, "stack", None):
            return
        self._send(state(debugger), keep=True)
        self._current = debugger.curindex


def state(debugger):
    """Return the page's view of ``debugger``: stack, selected frame, its source and locals.

    Args:
        debugger (pdb.Pdb): a debugger at its prompt (called in its thread).

    Returns:
        dict: ``{"type": "state", "stack": [{"file", "line", "function"}...],
        "current": int, "source": {"file", "first", "line", "lines"}, "locals": [[name, repr]...]}``.
    """
    from autodbg.stacks import short_repr

    stack = [
        {"file": frame.f_code.co_filename, "line": line, "function": frame.f_code.co_name}
        for frame, line in debugger.stack
    ]
    frame, line = debugger.stack[debugger.curindex]
    lines = linecache.getlines(frame.f_code.co_filename, frame.f_globals)
    first = max(1, line - SOURCE_CONTEXT)
    names = getattr(debugger, "curframe_locals", None)
    if names is None:
        names = frame.f_locals
    shown = sorted(names)[:MAX_LOCALS]
    return {
        "type": "state",
        "stack": stack,
        "current": debugger.curindex,
        "source": {
            "file": frame.f_code.co_filename,
            "first": first,
            "line": line,
            "lines": [text.rstrip("\n") for text in lines[first - 1 : line + SOURCE_CONTEXT]],
        },
        "locals": [[name, short_repr(names[name])] for name in shown],
    }
