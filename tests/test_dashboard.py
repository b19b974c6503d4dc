"""``autodbg web``: one page for a job's sessions and processes, their consoles, stacks and cast.

Real processes (plain Python ranks with torchrun's variables, in socket
mode), a real ``autodbg web``, a real HTTP client (http.client) and a real
websocket client (websockets.sync.client).
"""

import http.client
import json
import os
import re
import signal
import socket
import sys
import time

import pytest
from harness import BIN, target, wait_for_record
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

JOB = "dash"
CHROMIUM = "/usr/bin/chromium"
URL = re.compile(r"dashboard: open (http://127\.0\.0\.1:(\d+)/)\?token=([A-Za-z0-9_-]+)")


def _get(port, path, headers=None):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path, headers=headers or {})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def _socket(port, cookie, origin=None):
    return connect(
        f"ws://127.0.0.1:{port}/ws",
        sock=socket.create_connection(("127.0.0.1", port), timeout=10),
        origin=origin or f"http://127.0.0.1:{port}",
        additional_headers={"Cookie": cookie},
        open_timeout=10,
    )


class _Page:
    """The dashboard's websocket: the last table, each console's text, the last stacks and cast."""

    def __init__(self, websocket):
        self.ws = websocket
        self.table = None
        self.consoles = {}
        self.ended = set()
        self.texts = {}

    def until(self, predicate, what, timeout=30):
        deadline = time.monotonic() + timeout
        while not predicate():
            left = deadline - time.monotonic()
            assert left > 0, f"timed out waiting for {what}: {self.table} {self.consoles}"
            message = json.loads(self.ws.recv(left))
            if message["type"] == "table":
                self.table = message
            elif message["type"] == "console":
                self.consoles[message["key"]] = (
                    self.consoles.get(message["key"], "") + message["text"]
                )
            elif message["type"] == "console-end":
                self.ended.add(message["key"])
            else:
                self.texts[message["type"]] = message["text"]

    def ranks(self):
        return {s["rank"] for s in self.table["sessions"] if s["state"] == "waiting"}

    def send(self, **message):
        self.ws.send(json.dumps(message))


def _rank(start, env, rank):
    rank_env = dict(env, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="3")
    return start([sys.executable, target("dashboard_crash.py")], rank_env)


@pytest.mark.timeout(120)
def test_dashboard_lists_opens_casts_and_refuses(start, env, runtime_dir):
    env.update(AUTODBG_MODE="socket", TORCHELASTIC_RUN_ID=JOB)
    ranks = [_rank(start, env, rank) for rank in (0, 1)]
    for rank in (0, 1):
        wait_for_record(runtime_dir, rank=rank, state="waiting")
    web = start([os.path.join(BIN, "autodbg"), "web", "--job", JOB], env)
    web.wait_for("?token=")
    _, port, token = URL.search(web.output).groups()
    port = int(port)
    assert web.output.count(token) == 1 and len(token) >= 22  # >= 128 bits in base64
    assert _get(port, "/")[0] == 403
    assert _get(port, "/?token=" + "x" * len(token))[0] == 403
    status, headers, _ = _get(port, f"/?token={token}")
    assert status == 303 and "HttpOnly" in headers["Set-Cookie"], headers
    assert "SameSite=Strict" in headers["Set-Cookie"]
    cookie = headers["Set-Cookie"].split(";")[0]
    status, _, body = _get(port, "/", {"Cookie": cookie})
    assert status == 200 and b"dashboard.js" in body
    assert _get(port, "/dashboard.js", {"Cookie": cookie})[0] == 200
    with pytest.raises(InvalidStatus, match="403"):
        _socket(port, cookie, origin="http://evil.example")
    with pytest.raises(InvalidStatus, match="403"):
        _socket(port, "")
    web.wait_for("web: refused", count=4)

    with _socket(port, cookie) as websocket:
        page = _Page(websocket)
        page.until(lambda: page.table and page.ranks() == {0, 1}, "ranks 0 and 1 listed")
        assert {s["pid"] for s in page.table["sessions"]} == {r.pid for r in ranks}
        assert {p["pid"] for p in page.table["processes"]} == {r.pid for r in ranks}
        # Rank 1's console, through the dashboard.
        key = next(s["key"] for s in page.table["sessions"] if s["rank"] == 1)
        page.send(type="open", key=key)
        page.send(type="input", key=key, text="p marker")
        page.until(lambda: "'marker-of-rank-1'" in page.consoles.get(key, ""), "p marker's answer")
        # A second console on the same session: the session says it is busy.
        with _socket(port, cookie) as other:
            second = _Page(other)
            second.send(type="open", key=key)
            second.until(lambda: key in second.ended, "the busy session's refusal")
            assert "busy" in second.consoles[key] or "attached" in second.consoles[key]
        page.send(type="close", key=key)
        page.until(lambda: key in page.ended, "the console's end")
        # A rank that crashes later appears without a reload.
        _rank(start, env, 2)
        page.until(lambda: page.ranks() == {0, 1, 2}, "rank 2 listed", timeout=60)
        page.send(type="cast", ranks="all", command="p marker")
        page.until(lambda: "cast" in page.texts, "cast's answer")
        for rank in (0, 1, 2):
            assert f"marker-of-rank-{rank}" in page.texts["cast"], page.texts["cast"]
        page.send(type="stacks")
        page.until(lambda: "stacks" in page.texts, "the stacks")
        assert "dashboard_crash.py" in page.texts["stacks"], page.texts["stacks"]
    web.popen.send_signal(signal.SIGINT)
    assert web.wait(30) == 0


def _started(start, env, runtime_dir, ranks, extra=()):
    """Crash ``ranks`` in socket mode, start ``autodbg web``; return (web, port, token)."""
    env.update(AUTODBG_MODE="socket", TORCHELASTIC_RUN_ID=JOB)
    for rank in ranks:
        _rank(start, env, rank)
    for rank in ranks:
        wait_for_record(runtime_dir, rank=rank, state="waiting")
    web = start([os.path.join(BIN, "autodbg"), "web", "--job", JOB, *extra], env)
    web.wait_for("?token=")
    host, port, token = re.search(r"open http://([^:/]+):(\d+)/\?token=(\S+)", web.output).groups()
    return web, host, int(port), token


@pytest.mark.timeout(60)
def test_a_wildcard_address_says_who_can_reach_it(start, env, runtime_dir):
    env["AUTODBG_LISTEN"] = "0.0.0.0"
    web, host, port, token = _started(start, env, runtime_dir, [0])
    assert "dashboard listens on 0.0.0.0 (AUTODBG_LISTEN): anyone who can reach" in web.output
    assert host == os.uname().nodename
    assert _get(port, "/", {"Host": f"{host}:{port}"})[0] == 403
    status, _, _ = _get(port, f"/?token={token}", {"Host": f"{host}:{port}"})
    assert status == 303


@pytest.mark.timeout(120)
def test_the_dashboard_in_headless_chromium(start, env, runtime_dir, tmp_path):
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install playwright)")
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    _, host, port, token = _started(start, env, runtime_dir, [0, 1])
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"],
        )
        try:
            page = browser.new_page()
            page.goto(f"http://{host}:{port}/?token={token}")
            row = page.locator("#sessions tr").filter(has_text="1/3")
            row.get_by_role("button").click(timeout=20_000)
            page.fill("#input", "p marker")
            page.press("#input", "Enter")
            # Locators, not wait_for_function: the page's CSP forbids evaluating strings.
            expect(page.locator("#output")).to_contain_text("marker-of-rank-1", timeout=20_000)
            page.fill("#cast-command", "p marker")
            page.locator("#cast-form button").click()
            expect(page.locator("#cast")).to_contain_text("marker-of-rank-0", timeout=20_000)
            shot = tmp_path / "autodbg-dashboard.png"
            page.screenshot(path=str(shot), full_page=True)
            print(f"screenshot: {shot}")
        finally:
            browser.close()
