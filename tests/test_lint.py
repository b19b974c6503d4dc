"""The package, tests and benchmarks are ruff-clean (check and format) and mypy-clean."""

import os
import subprocess

import pytest
from harness import BIN

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize(
    "command",
    [
        ["ruff", "check", "autodbg", "tests", "benchmarks"],
        ["ruff", "format", "--check", "autodbg", "tests", "benchmarks"],
        ["mypy", "autodbg"],
    ],
    ids=["ruff-check", "ruff-format", "mypy"],
)
def test_clean(command):
    tool = os.path.join(BIN, command[0])
    done = subprocess.run(
        [tool, *command[1:]], cwd=TOP, capture_output=True, text=True, timeout=110
    )
    assert done.returncode == 0, done.stdout + done.stderr
