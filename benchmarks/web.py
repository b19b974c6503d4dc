"""The web page's time from open to a usable prompt, in headless Chromium.

Usage: .venv/bin/python benchmarks/web.py [--rounds N]

Each round crashes a fresh process (tests/targets/web_crash.py), then times,
from the browser's ``goto`` of the printed URL to the answer of a first
command (``p 6 * 7`` answered ``42``) in the console, what a user waits for
before the prompt is of use:

* the session's own page (``AUTODBG_MODE=web``), first open: the session
  imports its debugger (ipdb) at its first client, so this holds that import;
* the same page opened again (the debugger is made already);
* a console opened through ``autodbg web`` (socket mode, the dashboard's
  row button), first open, which holds the debugger's import too.

The debugger's import alone in a fresh interpreter is shown beside, for
scale. Goal: under 1 s from open to a usable prompt. Needs Playwright and
Debian's Chromium (``/usr/bin/chromium``), which ``scripts/test`` installs.
"""

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

from measure import clean_env, log

HERE = os.path.dirname(os.path.abspath(__file__))
TARGET = os.path.join(HERE, "..", "tests", "targets", "web_crash.py")
AUTODBG = os.path.join(os.path.dirname(sys.executable), "autodbg")
CHROMIUM = "/usr/bin/chromium"
URL = re.compile(r"open (http://\S+\?token=\S+)")
DEADLINE = 60.0  # seconds for a process to print its URL, or a page to answer


def url_of(stream, what):
    """Read ``stream`` (a process's stderr, or the dashboard's stdout) until its URL line."""
    deadline = time.monotonic() + DEADLINE
    seen = ""
    while time.monotonic() < deadline:
        line = stream.readline()
        if not line:
            break
        seen += line
        found = URL.search(line)
        if found:
            return found.group(1)
    raise SystemExit(f"{what} printed no URL: {seen}")


def crash(root, mode):
    env = dict(clean_env("1"), AUTODBG_DIR=root, AUTODBG_MODE=mode, AUTODBG_WAIT="120")
    env["TORCHELASTIC_RUN_ID"] = "bench-web"
    return subprocess.Popen([sys.executable, TARGET], env=env, stderr=subprocess.PIPE, text=True)


def answered(page, expect, started):
    page.fill("#input", "p 6 * 7")
    page.press("#input", "Enter")
    expect(page.locator("#output")).to_contain_text("42", timeout=DEADLINE * 1000)
    return time.perf_counter() - started


def session_page(browser, expect, root):
    proc = crash(root, "web")
    try:
        url = url_of(proc.stderr, "the crashed process")
        times = []
        for _ in range(2):  # first open, then the same page again
            context = browser.new_context()
            page = context.new_page()
            started = time.perf_counter()
            page.goto(url)
            times.append(answered(page, expect, started))
            context.close()
        return times
    finally:
        proc.kill()
        proc.wait()


def dashboard_console(browser, expect, root):
    proc = crash(root, "socket")
    web = None
    try:
        deadline = time.monotonic() + DEADLINE
        while "waiting" not in proc.stderr.readline():
            if time.monotonic() > deadline:
                raise SystemExit("the crashed process did not wait for a client")
        env = dict(clean_env(), AUTODBG_DIR=root)
        web = subprocess.Popen([AUTODBG, "web"], env=env, stdout=subprocess.PIPE, text=True)
        url = url_of(web.stdout, "autodbg web")
        page = browser.new_page()
        started = time.perf_counter()
        page.goto(url)
        page.locator("#sessions button").first.click(timeout=DEADLINE * 1000)
        elapsed = answered(page, expect, started)
        page.close()
        return elapsed
    finally:
        for child in (web, proc):
            if child is not None:
                child.kill()
                child.wait()


def ipdb_import():
    code = "import time; t = time.perf_counter(); import ipdb; print(time.perf_counter() - t)"
    return float(
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout
    )


def summary(name, values):
    return (
        f"{name:<44} median {statistics.median(values) * 1000:7.0f} ms, "
        f"max {max(values) * 1000:7.0f} ms ({len(values)} runs)"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        raise SystemExit("playwright is not installed: .venv/bin/pip install playwright") from None
    if not os.access(CHROMIUM, os.X_OK):
        raise SystemExit(f"no Chromium at {CHROMIUM}: apt-get install chromium")
    first, again, dashboard = [], [], []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"]
        )
        try:
            for round_ in range(args.rounds):
                log(f"round {round_ + 1} of {args.rounds}")
                with tempfile.TemporaryDirectory(prefix="adb-web-") as root:
                    os.chmod(root, 0o700)
                    opened, reopened = session_page(browser, expect, root)
                    first.append(opened)
                    again.append(reopened)
                with tempfile.TemporaryDirectory(prefix="adb-web-") as root:
                    os.chmod(root, 0o700)
                    dashboard.append(dashboard_console(browser, expect, root))
        finally:
            browser.close()
    imports = [ipdb_import() for _ in range(args.rounds)]
    print("open to a usable prompt (the answer of a first command), headless Chromium")
    print(summary("session page, first open (debugger import)", first))
    print(summary("session page, opened again", again))
    print(summary("dashboard console, first open", dashboard))
    print(summary("for scale: import ipdb in a fresh Python", imports))
    medians = {"first": statistics.median(first), "dashboard": statistics.median(dashboard)}
    for name, value in medians.items():
        print(f"goal under 1 s, {name}: {'met' if value < 1 else 'NOT met'} ({value:.2f} s)")


if __name__ == "__main__":
    main()
