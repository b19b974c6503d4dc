"""``threads`` and ``thread N`` in a real process: three threads blocked on Events, main raising."""

import os
import re
import subprocess

import pytest
from conftest import PYTHON
from harness import BIN, target, wait_for_record

pytestmark = pytest.mark.timeout(120)
AUTODBG = os.path.join(BIN, "autodbg")


def test_threads_lists_every_thread_and_thread_n_shows_its_stack(env, runtime_dir, start):
    env.update(AUTODBG_MODE="socket", AUTODBG_DEBUGGER="pdb")
    proc = start([PYTHON, target("threads_blocked.py")], env)
    wait_for_record(runtime_dir, pid=proc.pid, state="waiting")
    out = subprocess.run(
        [AUTODBG, "attach", str(proc.pid), "-c", "threads"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    assert "the others keep running" in out, out
    numbers = {}
    for name in ("MainThread", "loader", "metrics", "saver"):
        found = re.search(rf"^([* ]) (\d+) {name} ident \d+( daemon)? at (\S+)", out, re.MULTILINE)
        assert found, (name, out)
        numbers[name] = found.group(2)
        assert (found.group(3) is not None) == (name == "metrics"), out
    assert re.search(r"^\* \d+ MainThread .* threads_blocked.py:\d+ in main", out, re.MULTILINE), (
        out
    )
    assert "threading.py" in re.search(r"^  \d+ saver .*$", out, re.MULTILINE).group(0), out

    argv = [AUTODBG, "attach", str(proc.pid), "-c", f"thread {numbers['saver']}"]
    for line in ("p held", "where", "threads", "thread", "p failing", "thread 99", "q"):
        argv += ["-c", line]
    out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60).stdout
    assert "'held by saver'" in out, out
    # `where` shows the saver's frames: its worker, and threading's wait below it.
    shown = out[out.index("'held by saver'") :]
    assert "threads_blocked.py(12)worker()" in shown and "_bootstrap_inner" in shown, out
    assert re.search(rf"^\* {numbers['saver']} saver", out, re.MULTILINE), (
        out
    )  # the viewed one is marked
    assert '"main\'s local"' in out, out  # `thread` went back to the failing frame
    assert "no thread 99: type `threads`" in out, out
    assert proc.wait(30) == 1
