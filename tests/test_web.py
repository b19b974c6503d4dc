"""AUTODBG_MODE=web: one session's page, its token and cookie, and the debugger over its websocket.

Real processes, a real HTTP client (http.client) and a real websocket client
(websockets.sync.client); and, when Chromium and Playwright are there, a real
headless browser on the page.
"""

import http.client
import json
import os
import re
import socket
import stat
import sys
import time
import urllib.parse

import pytest
from harness import records, target, wait_until
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

CHROMIUM = "/usr/bin/chromium"
URL = re.compile(r"open (http://127\.0\.0\.1:(\d+)/)\?token=([A-Za-z0-9_-]+)")


def _crashed(start, env, runtime_dir):
    """Start web_crash.py in web mode; return (proc, base URL, port, token)."""
    env = dict(env, AUTODBG_MODE="web")
    proc = start([sys.executable, target("web_crash.py")], env)
    proc.wait_for("?token=")
    base, port, token = URL.search(proc.output).groups()
    return proc, base, int(port), token


def _get(port, path, headers=None):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path, headers=headers or {})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def _cookie(port, token):
    status, headers, _ = _get(port, f"/?token={token}")
    assert status == 303 and headers["Location"] == "/", (status, headers)
    cookie = headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie, cookie
    return cookie.split(";")[0]


def _socket(port, cookie, origin=None, host=None):
    # A forged Host: the client believes it talks to `host`, the socket goes to the session.
    return connect(
        f"ws://{host or f'127.0.0.1:{port}'}/ws",
        sock=socket.create_connection(("127.0.0.1", port), timeout=10),
        origin=origin or f"http://127.0.0.1:{port}",
        additional_headers={"Cookie": cookie},
        open_timeout=10,
    )


class _Page:
    """A websocket client that keeps the output and the last state the session sent."""

    def __init__(self, websocket):
        self.ws = websocket
        self.output = ""
        self.state = None

    def _take(self, timeout):
        message = json.loads(self.ws.recv(timeout))
        if message["type"] == "output":
            self.output += message["text"]
        elif message["type"] == "state":
            self.state = message
        return message

    def until(self, predicate, what, timeout=30):
        deadline = time.monotonic() + timeout
        while not predicate():
            left = deadline - time.monotonic()
            assert left > 0, f"timed out waiting for {what}; output:\n{self.output}"
            try:
                self._take(left)
            except ConnectionClosed:
                raise AssertionError(f"closed before {what}; output:\n{self.output}") from None

    def closed(self):
        """Wait for the session to close the websocket (its end); fail after 30 s."""
        try:
            self.until(lambda: False, "the end of the session")
        except AssertionError as error:
            assert str(error).startswith("closed before"), error

    def run(self, text, answer):
        self.ws.send(json.dumps({"type": "command", "text": text}))
        self.until(lambda: answer in self.output, repr(answer))


def test_the_url_token_cookie_and_refusals(start, env, runtime_dir):
    proc, base, port, token = _crashed(start, env, runtime_dir)
    assert proc.output.count(token) == 1
    record = wait_until(lambda: [r for r in records(runtime_dir) if r.get("web")], 30, "a record")[
        0
    ]
    assert record["web"] == base and record["state"] == "waiting"
    assert token not in json.dumps(records(runtime_dir))
    token_file = os.path.join(runtime_dir, str(record["job"]), f"{proc.pid}.web-token")
    assert stat.S_IMODE(os.stat(token_file).st_mode) == 0o600
    # No token, a wrong one, no cookie, a wrong cookie: 403, one line each.
    assert _get(port, "/")[0] == 403
    assert _get(port, "/?token=" + "x" * len(token))[0] == 403
    assert _get(port, "/app.js")[0] == 403
    assert _get(port, "/", {"Cookie": f"autodbg-{port}=nope"})[0] == 403
    proc.wait_for("web: refused", count=4)
    cookie = _cookie(port, token)
    status, headers, body = _get(port, "/", {"Cookie": cookie})
    assert status == 200 and b"<title>autodbg" in body
    assert headers["Referrer-Policy"] == "no-referrer"
    assert _get(port, "/app.js", {"Cookie": cookie})[0] == 200
    # A forged Host (DNS rebinding), with the right cookie: refused.
    assert _get(port, "/", {"Cookie": cookie, "Host": f"evil.example:{port}"})[0] == 403
    # The websocket: without the cookie, from another origin, with a forged Host.
    with pytest.raises(InvalidStatus, match="403"):
        _socket(port, "")
    with pytest.raises(InvalidStatus, match="403"):
        _socket(port, cookie, origin="http://evil.example")
    with pytest.raises(InvalidStatus, match="403"):
        _socket(port, cookie, origin=f"http://evil.example:{port}", host=f"evil.example:{port}")
    proc.wait_for("web: refused", count=8)
    # The rightful page still gets in; `q` ends the session, the process its crash status.
    with _socket(port, cookie) as websocket:
        page = _Page(websocket)
        page.until(lambda: page.state is not None, "the state")
        page.run("q", "ipdb> q")
    assert proc.wait(30) == 1
    assert proc.output.count("Traceback (most recent call last)") == 1
    assert not os.path.exists(token_file)


def test_the_debugger_over_the_websocket(start, env, runtime_dir):
    proc, _, port, token = _crashed(start, env, runtime_dir)
    cookie = _cookie(port, token)
    with _socket(port, cookie) as first, _socket(port, cookie) as second:
        page, watcher = _Page(first), _Page(second)
        page.until(lambda: page.state is not None, "the state")
        state = page.state
        frame = state["stack"][state["current"]]
        assert frame["function"] == "f" and frame["file"].endswith("web_crash.py")
        source = state["source"]
        assert source["lines"][source["line"] - source["first"]].strip() == "return items[5]"
        assert ["secret", "42"] in state["locals"]
        page.run("p secret * 2", "84")
        # Another tab sees the command and its output.
        watcher.until(lambda: "p secret * 2" in watcher.output and "84" in watcher.output, "84")
        # Several lines: one block of Python.
        page.run("total = 0\nfor i in range(4):\n    total += i\nprint('total', total)", "total 6")
        # Select the caller's frame from the other tab: main() and its locals.
        caller = state["current"] - 1
        watcher.ws.send(json.dumps({"type": "frame", "index": caller}))
        page.until(lambda: page.state["current"] == caller, "the caller's frame selected")
        assert page.state["stack"][caller]["function"] == "main"
        assert ["batch", "[1, 2]"] in page.state["locals"]
        assert "batch = [1, 2]" in "\n".join(page.state["source"]["lines"])
        page.run("p batch", "[1, 2]")
        page.run("q", "ipdb> q")
        watcher.closed()
    assert proc.wait(30) == 1
    assert not [r for r in records(runtime_dir) if r["pid"] == proc.pid]


def test_a_closed_page_can_be_opened_again(start, env, runtime_dir):
    proc, _, port, token = _crashed(start, env, runtime_dir)
    cookie = _cookie(port, token)
    with _socket(port, cookie) as websocket:
        page = _Page(websocket)
        page.run("p secret", "42")
    proc.wait_for("the session's last page closed; waiting up to 60 s")
    with _socket(port, cookie) as websocket:
        page = _Page(websocket)
        page.until(lambda: page.state is not None, "the state")
        page.run("p secret + 1", "43")
        page.run("q", "ipdb> q")
    assert proc.wait(30) == 1


def test_a_silent_client_delays_neither_the_page_nor_the_exit(start, env, runtime_dir):
    proc, _, port, token = _crashed(start, env, runtime_dir)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as silent:
        silent.sendall(b"GET / HTTP/1.1\r\n")  # and nothing more
        with _socket(port, _cookie(port, token)) as websocket:
            page = _Page(websocket)
            page.run("p secret", "42")
            page.ws.send(json.dumps({"type": "command", "text": "q"}))
            ended = time.monotonic()
            assert proc.wait(30) == 1
    # The silent client's thread is a daemon: the exit does not wait out its 5 s handshake.
    assert time.monotonic() - ended < 4


def test_the_page_interrupts_a_long_command(start, env, runtime_dir):
    proc, _, port, token = _crashed(start, env, runtime_dir)
    with _socket(port, _cookie(port, token)) as websocket:
        page = _Page(websocket)
        page.run("import time; time.sleep(60); print('slept')", "time.sleep(60)")
        page.ws.send(json.dumps({"type": "interrupt"}))
        page.until(lambda: "KeyboardInterrupt" in page.output, "the interrupt")
        page.run("p secret", "42")
        page.run("q", "ipdb> q")
    assert proc.wait(30) == 1
    assert "slept" not in proc.output


def test_a_breakpoint_in_web_mode(start, env, runtime_dir):
    proc = start([sys.executable, target("breakpoint_target.py")], dict(env, AUTODBG_MODE="web"))
    proc.wait_for("?token=")
    _, port, token = URL.search(proc.output).groups()
    with _socket(int(port), _cookie(int(port), token)) as websocket:
        page = _Page(websocket)
        page.until(lambda: page.state is not None, "the state")
        assert ["counter", "3"] in page.state["locals"]
        page.run("counter = 7", "ipdb> counter = 7")
        page.run("c", "ipdb> c")
        page.closed()
    proc.wait_for("after breakpoint 7")
    assert proc.wait(30) == 0


def test_a_wildcard_address_says_who_can_reach_it(start, env, runtime_dir):
    proc = start(
        [sys.executable, target("web_crash.py")],
        dict(env, AUTODBG_MODE="web", AUTODBG_LISTEN="0.0.0.0"),
    )
    proc.wait_for("?token=")
    assert "the page listens on 0.0.0.0 (AUTODBG_LISTEN): anyone who can reach" in proc.output
    host, port, token = re.search(r"open http://([^:/]+):(\d+)/\?token=(\S+)", proc.output).groups()
    assert host == socket.gethostname()
    # Any name of this host will do, with the page's port; the token still guards it.
    assert _get(int(port), "/", {"Host": f"{host}:{port}"})[0] == 403
    status, headers, _ = _get(int(port), f"/?token={token}", {"Host": f"{host}:{port}"})
    assert status == 303
    cookie = headers["Set-Cookie"].split(";")[0]
    with _socket(int(port), cookie, origin=f"http://{host}:{port}", host=f"{host}:{port}") as ws:
        page = _Page(ws)
        page.run("q", "ipdb> q")
    assert proc.wait(30) == 1


def test_no_page_within_the_wait_goes_on(start, env, runtime_dir):
    proc = start(
        [sys.executable, target("web_crash.py")], dict(env, AUTODBG_MODE="web", AUTODBG_WAIT="1")
    )
    assert proc.wait(30) == 1
    assert "no debugger attached within 1 s" in proc.output
    assert proc.output.count("Traceback (most recent call last)") == 1


def _playwright():
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install playwright)")
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    return sync_playwright, expect


def test_the_page_in_headless_chromium(start, env, runtime_dir, tmp_path):
    sync_playwright, expect = _playwright()
    proc, base, _, token = _crashed(start, env, runtime_dir)
    url = f"{base}?token={token}"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        try:
            page = browser.new_page()
            opened = time.monotonic()
            page.goto(url)
            assert urllib.parse.urlsplit(page.url).query == ""  # the token left the address bar
            marked = page.locator("#source .current")
            marked.wait_for(timeout=20_000)
            assert "return items[5]" in marked.inner_text()
            print(f"page open to marked line: {(time.monotonic() - opened) * 1000:.0f} ms")
            page.fill("#input", "p secret + 1")
            page.press("#input", "Enter")
            # Locators, not wait_for_function: the page's CSP forbids evaluating strings.
            expect(page.locator("#output")).to_contain_text("\n43\n", timeout=20_000)
            page.locator("#stack .function").get_by_text("main", exact=True).click()
            page.locator("#locals td.name", has_text="batch").wait_for(timeout=20_000)
            shot = tmp_path / "autodbg-web.png"
            page.screenshot(path=str(shot), full_page=True)
            print(f"screenshot: {shot}")
            page.fill("#input", "q")
            page.press("#input", "Enter")
            expect(page.locator("#status")).to_have_text("session ended", timeout=20_000)
        finally:
            browser.close()
    assert proc.wait(30) == 1
