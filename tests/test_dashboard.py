"""``autodbg web``: one page for a job's sessions and processes, their consoles, stacks and cast.

Real processes (plain Python ranks with torchrun's variables, in socket
mode), a real ``autodbg web``, a real HTTP client (http.client) and a real
websocket client (websockets.sync.client).
"""

import os
import re
import signal
import socket
import sys
import time

import psutil
import pytest
from harness import BIN, target, wait_for_record
from webpage import DashboardPage, chromium, cookie, get, websocket
from websockets.exceptions import InvalidStatus

JOB = "dash"
URL = re.compile(r"dashboard: open (http://127\.0\.0\.1:(\d+)/)\?token=([A-Za-z0-9_-]+)")


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
    assert get(port, "/")[0] == 403
    assert get(port, "/?token=" + "x" * len(token))[0] == 403
    status, headers, _ = get(port, f"/?token={token}")
    assert status == 303 and "HttpOnly" in headers["Set-Cookie"], headers
    assert "SameSite=Strict" in headers["Set-Cookie"]
    cookie = headers["Set-Cookie"].split(";")[0]
    status, _, body = get(port, "/", {"Cookie": cookie})
    assert status == 200 and b"dashboard.js" in body
    assert get(port, "/dashboard.js", {"Cookie": cookie})[0] == 200
    with pytest.raises(InvalidStatus, match="403"):
        websocket(port, cookie, origin="http://evil.example")
    with pytest.raises(InvalidStatus, match="403"):
        websocket(port, "")
    web.wait_for("web: refused", count=4)

    with websocket(port, cookie) as ws:
        page = DashboardPage(ws)
        page.until(lambda: page.table and page.ranks() == {0, 1}, "ranks 0 and 1 listed")
        assert {s["pid"] for s in page.table["sessions"]} == {r.pid for r in ranks}
        assert {p["pid"] for p in page.table["processes"]} == {r.pid for r in ranks}
        # Rank 1's console, through the dashboard.
        key = next(s["key"] for s in page.table["sessions"] if s["rank"] == 1)
        page.send(type="open", key=key)
        page.send(type="input", key=key, text="p marker")
        page.until(lambda: "'marker-of-rank-1'" in page.consoles.get(key, ""), "p marker's answer")
        # A second console on the same session: the session says it is busy.
        with websocket(port, cookie) as other:
            second = DashboardPage(other)
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
    assert get(port, "/", {"Host": f"{host}:{port}"})[0] == 403
    status, _, _ = get(port, f"/?token={token}", {"Host": f"{host}:{port}"})
    assert status == 303


def _free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _cookie_of(page):
    """The ``Cookie`` header the browser holds for the dashboard (the page's own, HttpOnly)."""
    return "; ".join(f"{c['name']}={c['value']}" for c in page.context.cookies())


@pytest.mark.timeout(120)
def test_the_dashboard_in_headless_chromium_and_ctrl_c(start, env, runtime_dir, tmp_path):
    web, host, port, token = _started(start, env, runtime_dir, [0, 1])
    with chromium() as (browser, expect):
        page = browser.new_page()
        page.goto(f"http://{host}:{port}/?token={token}")
        row = page.locator("#sessions tr").filter(has_text="1/3")
        row.get_by_role("button").click(timeout=20_000)
        # Typed at once, before the session's prompt came back: the command still runs.
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
        # Ctrl-C on `autodbg web`, with this tab open and its console relaying, another tab
        # and a client that never ends its request: it ends at once, status 0, and the
        # session it relayed waits for its next client.
        silent = socket.create_connection(("127.0.0.1", port), timeout=10)
        silent.sendall(b"GET / HTTP/1.1\r\n")
        with silent, websocket(port, _cookie_of(page)) as ws:
            other = DashboardPage(ws)
            other.until(lambda: other.table, "a second tab's table")
            pressed = time.monotonic()
            web.popen.send_signal(signal.SIGINT)
            assert web.wait(10) == 0
            assert time.monotonic() - pressed < 5, "autodbg web took long to end on Ctrl-C"
            expect(page.locator("#status")).to_contain_text("disconnected", timeout=10_000)
    wait_for_record(runtime_dir, rank=1, state="waiting")


@pytest.mark.timeout(60)
def test_sigterm_ends_the_dashboard_with_a_console_open(start, env, runtime_dir):
    web, _, port, token = _started(start, env, runtime_dir, [0])
    with websocket(port, cookie(port, token)) as ws:
        page = DashboardPage(ws)
        page.until(lambda: page.ranks() == {0}, "rank 0 listed")
        key = page.table["sessions"][0]["key"]
        page.send(type="open", key=key)
        page.send(type="input", key=key, text="p marker")
        page.until(lambda: "marker-of-rank-0" in page.consoles.get(key, ""), "p marker's answer")
        pressed = time.monotonic()
        web.popen.send_signal(signal.SIGTERM)
        assert web.wait(10) == -signal.SIGTERM  # as a Python program without a handler ends
        assert time.monotonic() - pressed < 5
    wait_for_record(runtime_dir, rank=0, state="waiting")


@pytest.mark.slow
@pytest.mark.torch
@pytest.mark.timeout(240)
def test_a_torchrun_job_in_the_dashboard(start, env, runtime_dir, tmp_path):
    """Ranks 1 and 2 of a real 3-rank job crash; the browser reaches rank 2 and casts on both."""
    pytest.importorskip("torch")
    env.update(AUTODBG_MODE="socket")  # torchrun pipes the workers' output: no terminal
    job = start(
        [
            os.path.join(BIN, "torchrun"),
            "--nproc_per_node=3",
            f"--master-port={_free_port()}",
            target("dashboard_ddp.py"),
        ],
        env,
    )
    for rank in (1, 2):
        wait_for_record(runtime_dir, timeout=180, rank=rank, state="waiting")
    web = start([os.path.join(BIN, "autodbg"), "web"], env)  # as a user would: no flags
    web.wait_for("?token=")
    host, port, token = re.search(r"open http://([^:/]+):(\d+)/\?token=(\S+)", web.output).groups()
    with chromium() as (browser, expect):
        context = browser.new_context()  # its tabs share the cookie
        page = context.new_page()
        page.goto(f"http://{host}:{port}/?token={token}")
        sessions = page.locator("#sessions tr")
        for rank in (1, 2):
            expect(sessions.filter(has_text=f"{rank}/3")).to_contain_text("waiting", timeout=20_000)
        expect(sessions).to_have_count(3)  # the header and two sessions
        workers = [
            p.pid
            for p in psutil.Process(job.pid).children(recursive=True)
            if "dashboard_ddp.py" in " ".join(p.cmdline())
        ]
        assert len(workers) == 3
        for pid in workers:  # every live rank, rank 0 (in all_reduce) too
            expect(page.locator("#processes")).to_contain_text(str(pid), timeout=20_000)
        # A second tab lists them too.
        second = context.new_page()
        second.goto(f"http://{host}:{port}/")
        expect(second.locator("#sessions tr").filter(has_text="2/3")).to_be_visible(timeout=20_000)
        second.close()
        # The second session, rank 2, through the dashboard's single port.
        sessions.filter(has_text="2/3").get_by_role("button").click()
        page.fill("#input", "p marker")
        page.press("#input", "Enter")
        expect(page.locator("#output")).to_contain_text("'marker-of-rank-2'", timeout=30_000)
        page.fill("#cast-ranks", "1,2")
        page.fill("#cast-command", "p marker")
        page.locator("#cast-form button").click()
        cast = page.locator("#cast")
        expect(cast).to_contain_text("marker-of-rank-1", timeout=30_000)
        expect(cast).to_contain_text("marker-of-rank-2")
        shot = tmp_path / "autodbg-dashboard-torchrun.png"
        page.screenshot(path=str(shot), full_page=True)
        print(f"screenshot: {shot}")
        # `q` in each session's console, as a user ends them. Rank 2 exits; autodbg's launcher
        # keeps the job for rank 1's open session; rank 1 exits, then torchrun stops rank 0
        # (in all_reduce) and ends as it does without autodbg: status 1, ChildFailedError.
        page.fill("#input", "q")
        page.press("#input", "Enter")
        expect(page.locator("#output")).to_contain_text("[console closed]", timeout=30_000)
        expect(sessions).to_have_count(2, timeout=20_000)  # rank 2's row went
        sessions.filter(has_text="1/3").get_by_role("button").click()
        page.fill("#input", "q")
        page.press("#input", "Enter")
        quit_at = time.monotonic()
        assert job.wait(60) == 1, job.output
        assert time.monotonic() - quit_at < 30, "the job took long to end after the last `q`"
        expect(sessions).to_have_count(1, timeout=20_000)  # the header alone: no session left
    assert "ChildFailedError" in job.output
    assert job.output.count("[rank2]: RuntimeError: marker-of-rank-2") == 1, job.output
