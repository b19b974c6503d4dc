"""Process harness for the tests: real processes, waits on observable events, clean teardown.

After python-process-tests: start a program in its own session, collect its
output on a thread, wait for a string with a deadline (and say which one never
came, with the output so far), and on teardown terminate, then kill, the
whole process group.
"""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

TARGETS = os.path.join(os.path.dirname(__file__), "targets")
BIN = os.path.dirname(sys.executable)


def target(name):
    """Return the path of a program in tests/targets/."""
    return os.path.join(TARGETS, name)


def wait_until(predicate, timeout, what):
    """Poll ``predicate`` every 50 ms until it returns a true value or ``timeout`` seconds pass.

    Raises:
        AssertionError: naming ``what`` when the deadline passes.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


class Proc:
    """A program started with stdin from /dev/null and stdout+stderr on one pipe.

    Args:
        argv (list[str]): the command.
        env (dict): its whole environment.
        cwd (str | None): its working directory.
    """

    def __init__(self, argv, env, cwd=None):
        self.argv = argv
        self.popen = subprocess.Popen(
            argv,
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.pid = self.popen.pid
        self._chunks = []
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for chunk in iter(lambda: os.read(self.popen.stdout.fileno(), 65536), b""):
            with self._lock:
                self._chunks.append(chunk)

    @property
    def output(self):
        """Everything the program printed so far, decoded."""
        with self._lock:
            return b"".join(self._chunks).decode("utf-8", "replace")

    def wait_for(self, text, timeout=60, count=1):
        """Wait until ``text`` appeared ``count`` times in the output.

        Raises:
            AssertionError: with the output so far, when it does not within ``timeout`` s.
        """
        try:
            wait_until(lambda: self.output.count(text) >= count, timeout, repr(text))
        except AssertionError as error:
            raise AssertionError(f"{error} in the output of {self.argv}:\n{self.output}") from None

    def wait(self, timeout=60):
        """Wait for the program to exit and its output to be read; return its exit status."""
        try:
            status = self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"{self.argv} still running after {timeout} s:\n{self.output}"
            ) from None
        self._reader.join(10)
        return status

    def kill(self):
        """Terminate the process group, then kill it after 5 s; then kill what is left of its tree.

        torchrun starts each worker in a session of its own, outside this
        process group: they are found as descendants before the group goes.
        """
        import psutil

        try:
            descendants = psutil.Process(self.pid).children(recursive=True)
        except psutil.Error:
            descendants = []
        for sig, grace in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
            try:
                os.killpg(self.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.popen.wait(grace)
                break
            except subprocess.TimeoutExpired:
                continue
        for process in descendants:
            try:
                process.kill()
            except psutil.Error:
                pass


def records(runtime_dir):
    """Return the session records under ``runtime_dir`` as ``autodbg ls --json`` prints them."""
    out = subprocess.run(
        [os.path.join(BIN, "autodbg"), "ls", "--json"],
        env=dict(os.environ, AUTODBG_DIR=runtime_dir),
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return json.loads(out.stdout)


def wait_for_record(runtime_dir, timeout=60, **fields):
    """Wait for a session record whose fields equal ``fields``; return it."""

    def find():
        for record in records(runtime_dir):
            if all(record.get(k) == v for k, v in fields.items()):
                return record
        return None

    return wait_until(find, timeout, f"a session record with {fields} in {runtime_dir}")


def files_under(root, keep):
    """Return the paths of the files below ``root`` whose name ``keep(name)`` accepts."""
    return [
        os.path.join(folder, name)
        for folder, _, names in os.walk(root)
        for name in names
        if keep(name)
    ]


def plain(text):
    """Return ``text`` without terminal escape sequences (colours, cursor moves)."""
    return re.sub(r"\x1b(\[[0-9;?]*[ -/]*[@-~]|[()][0-9A-Za-z]|[=>])", "", text)
