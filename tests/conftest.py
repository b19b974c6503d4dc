import io
import os
import shutil
import sys
import tempfile

import pexpect
import psutil
import pytest
from harness import BIN, Proc

from autodbg.messages import FAILURES

PYTHON = sys.executable


@pytest.fixture
def runtime_dir():
    """A fresh AUTODBG_DIR, short enough for Unix socket paths (107 bytes)."""
    path = tempfile.mkdtemp(prefix="adt-", dir="/tmp")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def env(runtime_dir):
    """The environment of a program run with AUTODBG=1 and the test's runtime directory."""
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(
            ("AUTODBG", "PYTEST_", "RANK", "LOCAL_RANK", "WORLD_SIZE", "TORCHELASTIC")
        )
    }
    base.update(
        AUTODBG="1",
        AUTODBG_DIR=runtime_dir,
        AUTODBG_WAIT="60",
        PROMPT_TOOLKIT_NO_CPR="1",  # pexpect's pty answers no cursor-position request
        TERM="xterm",
        PATH=BIN + os.pathsep + os.environ.get("PATH", ""),
    )
    return base


@pytest.fixture
def start(request):
    """Start a program with :class:`harness.Proc`; every one is killed at teardown."""
    started = []

    def _start(argv, env, cwd=None):
        proc = Proc(argv, env, cwd)
        started.append(proc)
        return proc

    yield _start
    for proc in started:
        proc.kill()
    for proc in started:
        assert_no_autodbg_failure(proc.output, proc.argv)


@pytest.fixture
def spawn():
    """Start a program on a real pty with pexpect; every one is terminated at teardown."""
    started = []

    def _spawn(command, env, timeout=60, **kwargs):
        child = pexpect.spawn(
            command, env=env, encoding="utf-8", timeout=timeout, dimensions=(40, 160), **kwargs
        )
        child.logfile_read = io.StringIO()  # the whole session, for assertions at the end
        started.append(child)
        return child

    yield _spawn
    for child in started:
        if child.isalive():
            try:
                descendants = psutil.Process(child.pid).children(recursive=True)
            except psutil.Error:
                descendants = []
            child.terminate(force=True)
            for process in descendants:  # torchrun's workers live in sessions of their own
                try:
                    process.kill()
                except psutil.Error:
                    pass
    for child in started:
        assert_no_autodbg_failure(child.logfile_read.getvalue(), child.args)


def assert_no_autodbg_failure(output, command):
    """autodbg reports its own failures in one line each (autodbg.messages.FAILURES); no test expects one."""
    for sign in FAILURES:
        assert f"autodbg: {sign}" not in output and f"] {sign}" not in output, (
            f"{sign!r} in the output of {command}:\n{output}"
        )
