"""AUTODBG_TRACE: the same events as PySnooper's on the same functions, and the crashing thread's last events in its session and crash record."""

import json
import os
import re
import subprocess
import sys

import pexpect
import pytest
from harness import files_under, target
from test_versions import interpreter

RUN = target("trace_run.py")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EVENT = re.compile(
    r"^(?P<indent> *)(?:\d\d:\d\d:\d\d\.\d+ )?(?P<kind>call|line|return|exception) +(?P<line>\d+) "
)
VALUE = re.compile(
    r"^(?P<indent> *)(?P<kind>Starting var|New var|Modified var|Return value|Exception)[:.]+ (?P<text>.*)$"
)


def events(text):
    """Return PySnooper's or autodbg's trace as comparable tuples: event lines, values, ends by exception."""
    found = []
    for line in text.splitlines():
        event, value = EVENT.match(line), VALUE.match(line)
        if event:
            found.append((len(event["indent"]), event["kind"], int(event["line"])))
        elif value:
            found.append((len(value["indent"]), value["kind"], value["text"]))
        elif line.strip() == "Call ended by exception":
            found.append((len(line) - len(line.lstrip()), "ended by exception"))
    return found


@pytest.fixture(scope="module", params=["python3.11", "python3.12"])
def python(request, tmp_path_factory):
    """(interpreter, extra environment): the venv's 3.11, or python3.12 with the checkout on its path.

    For 3.12, a ``sitecustomize`` runs autodbg.pth's line (the start-up path of
    an installed autodbg) and PySnooper, pure Python, comes from the venv.
    """
    if request.param == "python3.11":
        return sys.executable, {}
    base = interpreter(request.param)
    if base is None:
        pytest.skip(f"{request.param} is not installed")
    site = tmp_path_factory.mktemp("site312")
    with open(os.path.join(REPO, "autodbg.pth")) as pth:
        (site / "sitecustomize.py").write_text(pth.read())
    import pysnooper

    (site / "pysnooper").symlink_to(os.path.dirname(pysnooper.__file__))
    return base, {"PYTHONPATH": f"{site}{os.pathsep}{REPO}"}


def run(argv, env):
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("call", [["compute", "4"], ["fib", "3"], ["fail", "0"]])
def test_same_events_as_pysnooper(python, call, env, runtime_dir, tmp_path):
    interpreter, extra = python
    env.update(extra, AUTODBG_TRACE=f"trace_fixture:{call[0]}", AUTODBG_WAIT="0")
    ours = run([interpreter, RUN, *call], env)
    snooped = tmp_path / "pysnooper.txt"
    plain = {k: v for k, v in env.items() if not k.startswith("AUTODBG")}
    theirs = run([interpreter, RUN, "--pysnooper", str(snooped), *call], plain)
    assert ours.stdout == theirs.stdout and ours.returncode == theirs.returncode, ours.stderr
    (written,) = files_under(runtime_dir, lambda name: name.startswith("trace-"))
    with open(written) as trace:
        text = trace.read()
    expected = events(snooped.read_text())
    assert len(expected) >= 10
    assert events(text) == expected
    if call[0] == "fail":
        assert "Exception:..... ZeroDivisionError: division by zero" in text


def test_crash_session_shows_last_events(python, env, runtime_dir, spawn):
    interpreter, extra = python
    env.update(extra, AUTODBG_TRACE="trace_fixture:fail", AUTODBG_DEBUGGER="pdb")
    child = spawn(f"{interpreter} {RUN} fail 0", env)
    child.expect(r"\(Pdb\) ")
    child.sendline("trace 3")
    child.expect(r"line +37 +ratio = sum\(values\) / count")
    child.expect(r"Exception:\.+ ZeroDivisionError: division by zero")
    child.expect("Call ended by exception")
    child.expect(r"trace: every event of this process is in \S+trace-\d+\.txt")
    child.expect(r"\(Pdb\) ")
    child.sendline("q")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 1
    (record,) = files_under(
        os.path.join(runtime_dir, "crashes"), lambda name: name.endswith(".json")
    )
    with open(record) as source:
        kept = json.load(source)["trace"]
    assert kept[0].startswith(">>> trace_fixture:fail") and "Starting var:.. n = 0" in kept[0]
    assert kept[-1] == "Call ended by exception"
    shown = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "autodbg"), "show"],
        env={**os.environ, "AUTODBG_DIR": runtime_dir},
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout
    assert (
        "Last traced events of the thread (AUTODBG_TRACE)" in shown
        and "Call ended by exception" in shown
    )


def test_untraced_thread_has_no_events(env, runtime_dir, spawn):
    env.update(AUTODBG_TRACE="trace_fixture:compute", AUTODBG_DEBUGGER="pdb")
    child = spawn(f"{sys.executable} {RUN} fail 0", env)
    child.expect(r"\(Pdb\) ")
    child.sendline("trace")
    child.expect(r"trace: no traced events in this thread \(traced: trace_fixture:compute\)")
    child.sendline("trace x")
    child.expect("trace: 'x' is not a number of events")
    child.sendline("q")
    child.expect(pexpect.EOF)
