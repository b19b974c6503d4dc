"""torchelastic's error file (``TORCHELASTIC_ERROR_FILE``), written by a failing worker without ``@record``.

Real processes. The worker's parent is torchrun's agent in a real job
(tests/test_torchrun.py checks torchrun's summary); here it is this test,
named as the launcher (``AUTODBG_LAUNCHER``), so each case runs in a second.
"""

import json
import os
import subprocess
import sys

import pytest
from harness import target

pytestmark = pytest.mark.timeout(60)


def _worker(env, tmp_path, *argv):
    path = tmp_path / "error.json"
    env.update(
        AUTODBG_MODE="socket",
        AUTODBG_WAIT="0",
        AUTODBG_LAUNCHER=str(os.getpid()),
        TORCHELASTIC_ERROR_FILE=str(path),
    )
    done = subprocess.run(
        [sys.executable, *argv], env=env, capture_output=True, text=True, timeout=50
    )
    return done, path


def test_a_failing_worker_writes_torchs_format(env, tmp_path):
    done, path = _worker(env, tmp_path, target("crash.py"))
    assert done.returncode == 1 and done.stderr.count("Traceback (most recent call last)") == 1
    data = json.loads(path.read_text())
    assert data["message"]["message"] == "IndexError: list index out of range"
    assert "return items[5]" in data["message"]["extraInfo"]["py_callstack"]
    assert data["message"]["extraInfo"]["timestamp"].isdigit()
    torch_errors = pytest.importorskip("torch.distributed.elastic.multiprocessing.errors")
    # What torchrun's agent makes of it (its summary's "Root Cause").
    failure = torch_errors.ProcessFailure(local_rank=0, pid=1, exitcode=1, error_file=str(path))
    assert failure.message["message"] == "IndexError: list index out of range"


def test_a_file_there_already_is_kept(env, tmp_path):
    # A program with torch's @record wrote its own before the exception reached the hook.
    (tmp_path / "error.json").write_text('{"message": "its own"}')
    _, path = _worker(env, tmp_path, target("crash.py"))
    assert path.read_text() == '{"message": "its own"}'


def test_a_child_of_the_worker_writes_none(env, tmp_path):
    # The child inherits the variable; its failure is not the rank's.
    code = f"import subprocess, sys; subprocess.run([sys.executable, {target('crash.py')!r}])"
    done, path = _worker(env, tmp_path, "-c", code)
    assert "IndexError" in done.stderr and not path.exists()


def test_keyboard_interrupt_writes_none(env, tmp_path):
    done, path = _worker(env, tmp_path, "-c", "raise KeyboardInterrupt")
    assert done.returncode != 0 and not path.exists()
