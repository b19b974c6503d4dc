"""AUTODBG_MODE=web: one session's page, its token and cookie, and the debugger over its websocket.

Real processes, a real HTTP client (http.client) and a real websocket client
(websockets.sync.client); and, when Chromium and Playwright are there, a real
headless browser on the page.
"""

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
from webpage import SessionPage, chromium, cookie, get, websocket
from websockets.exceptions import InvalidStatus

URL = re.compile(r"open (http://127\.0\.0\.1:(\d+)/)\?token=([A-Za-z0-9_-]+)")


def _crashed(start, env, runtime_dir):
    """Start web_crash.py in web mode; return (proc, base URL, port, token)."""
    env = dict(env, AUTODBG_MODE="web")
    proc = start([sys.executable, target("web_crash.py")], env)
    proc.wait_for("?token=")
    base, port, token = URL.search(proc.output).groups()
    return proc, base, int(port), token


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
    assert get(port, "/")[0] == 403
    assert get(port, "/?token=" + "x" * len(token))[0] == 403
    assert get(port, "/app.js")[0] == 403
    assert get(port, "/", {"Cookie": f"autodbg-{port}=nope"})[0] == 403
    proc.wait_for("web: refused", count=4)
    given = cookie(port, token)
    status, headers, body = get(port, "/", {"Cookie": given})
    assert status == 200 and b"<title>autodbg" in body
    assert headers["Referrer-Policy"] == "no-referrer"
    assert get(port, "/app.js", {"Cookie": given})[0] == 200
    # A forged Host (DNS rebinding), with the right cookie: refused.
    assert get(port, "/", {"Cookie": given, "Host": f"evil.example:{port}"})[0] == 403
    # The websocket: without the cookie, from another origin, with a forged Host.
    with pytest.raises(InvalidStatus, match="403"):
        websocket(port, "")
    with pytest.raises(InvalidStatus, match="403"):
        websocket(port, given, origin="http://evil.example")
    with pytest.raises(InvalidStatus, match="403"):
        websocket(port, given, origin=f"http://evil.example:{port}", host=f"evil.example:{port}")
    proc.wait_for("web: refused", count=8)
    # The rightful page still gets in; `q` ends the session, the process its crash status.
    with websocket(port, given) as ws:
        page = SessionPage(ws)
        page.until(lambda: page.state is not None, "the state")
        page.run("q", "ipdb> q")
    assert proc.wait(30) == 1
    assert proc.output.count("Traceback (most recent call last)") == 1
    assert not os.path.exists(token_file)


def test_the_debugger_over_the_websocket(start, env, runtime_dir):
    proc, _, port, token = _crashed(start, env, runtime_dir)
    given = cookie(port, token)
    with websocket(port, given) as first, websocket(port, given) as second:
        page, watcher = SessionPage(first), SessionPage(second)
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
        watcher.send(type="frame", index=caller)
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
    given = cookie(port, token)
    with websocket(port, given) as ws:
        page = SessionPage(ws)
        page.run("p secret", "42")
    proc.wait_for("the session's last page closed; waiting up to 60 s")
    with websocket(port, given) as ws:
        page = SessionPage(ws)
        page.until(lambda: page.state is not None, "the state")
        page.run("p secret + 1", "43")
        page.run("q", "ipdb> q")
    assert proc.wait(30) == 1


def test_a_silent_client_delays_neither_the_page_nor_the_exit(start, env, runtime_dir):
    proc, _, port, token = _crashed(start, env, runtime_dir)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as silent:
        silent.sendall(b"GET / HTTP/1.1\r\n")  # and nothing more
        with websocket(port, cookie(port, token)) as ws:
            page = SessionPage(ws)
            page.run("p secret", "42")
            page.send(type="command", text="q")
            ended = time.monotonic()
            assert proc.wait(30) == 1
    # The silent client's thread is a daemon: the exit does not wait out its 5 s handshake.
    assert time.monotonic() - ended < 4


def test_the_page_interrupts_a_long_command(start, env, runtime_dir):
    proc, _, port, token = _crashed(start, env, runtime_dir)
    with websocket(port, cookie(port, token)) as ws:
        page = SessionPage(ws)
        page.run("import time; time.sleep(60); print('slept')", "time.sleep(60)")
        page.send(type="interrupt")
        page.until(lambda: "KeyboardInterrupt" in page.output, "the interrupt")
        page.run("p secret", "42")
        page.run("q", "ipdb> q")
    assert proc.wait(30) == 1
    assert "slept" not in proc.output


def test_a_breakpoint_in_web_mode(start, env, runtime_dir):
    proc = start([sys.executable, target("breakpoint_target.py")], dict(env, AUTODBG_MODE="web"))
    proc.wait_for("?token=")
    _, port, token = URL.search(proc.output).groups()
    with websocket(int(port), cookie(int(port), token)) as ws:
        page = SessionPage(ws)
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
    assert get(int(port), "/", {"Host": f"{host}:{port}"})[0] == 403
    status, headers, _ = get(int(port), f"/?token={token}", {"Host": f"{host}:{port}"})
    assert status == 303
    given = headers["Set-Cookie"].split(";")[0]
    with websocket(int(port), given, origin=f"http://{host}:{port}", host=f"{host}:{port}") as ws:
        page = SessionPage(ws)
        page.run("q", "ipdb> q")
    assert proc.wait(30) == 1


def test_no_page_within_the_wait_goes_on(start, env, runtime_dir):
    proc = start(
        [sys.executable, target("web_crash.py")], dict(env, AUTODBG_MODE="web", AUTODBG_WAIT="1")
    )
    assert proc.wait(30) == 1
    assert "no debugger attached within 1 s" in proc.output
    assert proc.output.count("Traceback (most recent call last)") == 1


def test_the_page_in_headless_chromium(start, env, runtime_dir, tmp_path):
    proc, base, _, token = _crashed(start, env, runtime_dir)
    with chromium() as (browser, expect):
        page = browser.new_page()
        opened = time.monotonic()
        page.goto(url=f"{base}?token={token}")
        assert urllib.parse.urlsplit(page.url).query == ""  # the token left the address bar
        # Typed at once, before the websocket or the debugger is ready: the page keeps it.
        page.fill("#input", "p secret + 1")
        page.press("#input", "Enter")
        marked = page.locator("#source .current")
        marked.wait_for(timeout=20_000)
        print(f"page open to marked line: {(time.monotonic() - opened) * 1000:.0f} ms")
        assert "return items[5]" in marked.inner_text()
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
    assert proc.wait(30) == 1
