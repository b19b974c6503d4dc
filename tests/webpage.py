"""What the web tests share: an HTTP GET, a page's websocket, its protocol clients, Chromium.

A session's page (``AUTODBG_MODE=web``, :mod:`autodbg.backends.web`) and the
dashboard (``autodbg web``, :mod:`autodbg.dashboard`) speak JSON messages
over one websocket each; :class:`SessionPage` and :class:`DashboardPage`
keep what each sent. :func:`chromium` starts Debian's headless Chromium
through Playwright, or skips the test when either is missing.
"""

import contextlib
import http.client
import json
import os
import socket
import time

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def get(port, path, headers=None, timeout=10):
    """GET ``path`` from 127.0.0.1:``port`` (``timeout`` seconds); return (status, headers, body)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", path, headers=headers or {})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def cookie(port, token):
    """Trade the URL's token for the page's cookie (``name=value``), checking its flags."""
    status, headers, _ = get(port, f"/?token={token}")
    assert status == 303 and headers["Location"] == "/", (status, headers)
    given = headers["Set-Cookie"]
    assert "HttpOnly" in given and "SameSite=Strict" in given, given
    return given.split(";")[0]


def websocket(port, cookie, origin=None, host=None):
    """Open the page's websocket (``/ws``) on 127.0.0.1:``port``.

    ``host`` forges the ``Host`` header: the client believes it talks to
    ``host``, the socket goes to the page.
    """
    return connect(
        f"ws://{host or f'127.0.0.1:{port}'}/ws",
        sock=socket.create_connection(("127.0.0.1", port), timeout=10),
        origin=origin or f"http://127.0.0.1:{port}",
        additional_headers={"Cookie": cookie},
        open_timeout=10,
    )


class _Client:
    """A page's websocket read message by message, each handed to :meth:`take`."""

    def __init__(self, ws):
        self.ws = ws

    def take(self, message):
        raise NotImplementedError

    def seen(self):
        """What to show when a wait times out."""
        return ""

    def until(self, predicate, what, timeout=30):
        """Read messages until ``predicate()`` holds; fail after ``timeout`` s or at the close."""
        deadline = time.monotonic() + timeout
        while not predicate():
            left = deadline - time.monotonic()
            assert left > 0, f"timed out waiting for {what}; seen:\n{self.seen()}"
            try:
                self.take(json.loads(self.ws.recv(left)))
            except TimeoutError:
                continue  # the deadline's assertion says it
            except ConnectionClosed:
                raise AssertionError(f"closed before {what}; seen:\n{self.seen()}") from None

    def send(self, **message):
        self.ws.send(json.dumps(message))


class SessionPage(_Client):
    """A session page's websocket: the output so far and the last state."""

    def __init__(self, ws):
        super().__init__(ws)
        self.output = ""
        self.state = None

    def take(self, message):
        if message["type"] == "output":
            self.output += message["text"]
        elif message["type"] == "state":
            self.state = message

    def seen(self):
        return self.output

    def closed(self):
        """Wait for the session to close the websocket (its end); fail after 30 s."""
        try:
            self.until(lambda: False, "the end of the session")
        except AssertionError as error:
            assert str(error).startswith("closed before"), error

    def run(self, text, answer):
        """Send a debugger command; wait for ``answer`` in the output."""
        self.send(type="command", text=text)
        self.until(lambda: answer in self.output, repr(answer))


class DashboardPage(_Client):
    """The dashboard's websocket: the last table, each console's text, the last stacks and cast."""

    def __init__(self, ws):
        super().__init__(ws)
        self.table = None
        self.consoles = {}
        self.ended = set()
        self.texts = {}

    def take(self, message):
        if message["type"] == "table":
            self.table = message
        elif message["type"] == "console":
            self.consoles[message["key"]] = self.consoles.get(message["key"], "") + message["text"]
        elif message["type"] == "console-end":
            self.ended.add(message["key"])
        else:
            self.texts[message["type"]] = message["text"]

    def seen(self):
        return f"{self.table}\n{self.consoles}"

    def ranks(self):
        """The ranks listed with a session waiting for a client."""
        if self.table is None:
            return set()
        return {s["rank"] for s in self.table["sessions"] if s["state"] == "waiting"}


@contextlib.contextmanager
def chromium():
    """Yield (browser, expect): headless Chromium via Playwright; skip when either is missing."""
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install playwright)")
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser, expect
        finally:
            browser.close()
