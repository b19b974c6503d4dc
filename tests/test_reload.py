"""``reload`` and ``AUTODBG_RELOAD=watch`` on real processes and real files.

A target crashes into a socket session; while the session waits, the test
edits the program's own source file (a copy in the test's directory), and
``autodbg attach -c`` types ``reload`` and calls the definitions at the prompt.
"""

import os
import shutil
import subprocess

from conftest import PYTHON
from harness import BIN, target, wait_for_record

AUTODBG = os.path.join(BIN, "autodbg")

# What the prompt prints for the definitions of reload_kinds.py, before and after EDITS.
CALLS = "p (f(2), Model().step(2), triple(2), make_scaler(2)(2), with_defaults(1), decorated(5))"
BEFORE = "(3, 20, 6, 4, 4, 4)"
EDITS = (
    ("return x + 1", "return x + 2"),  # a function
    ("return x * 10", "return x * 100"),  # a method
    ("return x * k", "return x * k + 1"),  # a closure, also the one made before (triple)
    ("n=1, *, m=2", "n=10, *, m=20"),  # defaults and keyword defaults
    ("return x - 1", "return x - 2"),  # a decorated function, through __wrapped__
    ("calls = 0", "calls = 100\n\n\ndef added(y):\n    return y * 7"),  # state; a new function
)
AFTER = "(4, 200, 7, 5, 31, 3)"


def program(tmp_path, name):
    """Copy ``tests/targets/NAME`` to the test's directory; return its path."""
    path = os.path.join(tmp_path, name)
    shutil.copy(target(name), path)
    return path


def edit(path, *replacements, rename=False):
    """Save ``path`` with each ``(old, new)`` replaced, in place or as vim does (write, rename)."""
    with open(path) as file:
        text = file.read()
    for old, new in replacements:
        assert old in text, old
        text = text.replace(old, new)
    written = path + ".swp" if rename else path
    with open(written, "w") as file:
        file.write(text)
    if rename:
        os.replace(written, path)


def crashed(start, env, runtime_dir, path):
    """Run ``path`` in its directory until its socket session waits; return the process."""
    proc = start([PYTHON, path], dict(env, AUTODBG_MODE="socket"), cwd=os.path.dirname(path))
    wait_for_record(runtime_dir, pid=proc.pid, state="waiting")
    return proc


def commands(env, pid, *lines):
    """Type ``lines`` at the session of ``pid`` with ``autodbg attach -c``; return what it printed."""
    argv = [AUTODBG, "attach", str(pid)]
    for line in lines:
        argv += ["-c", line]
    out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def quit_session(env, proc):
    commands(env, proc.pid, "q")
    assert proc.wait(30) == 1  # the RuntimeError's status: reload changed nothing of the exit


def test_reload_patches_every_kind_of_definition(env, runtime_dir, start, tmp_path):
    path = program(tmp_path, "reload_kinds.py")
    proc = crashed(start, env, runtime_dir, path)
    assert BEFORE in commands(env, proc.pid, CALLS)
    edit(path, *EDITS, rename=True)  # an atomic save: a new file renamed over the old one
    out = commands(env, proc.pid, "reload", CALLS, "p added(3), calls", "reload")
    assert (
        "reload_kinds.py: f, Model.step, make_scaler, with_defaults, decorated, added (new)" in out
    ), out
    assert AFTER in out, out
    assert "(21, 1)" in out, out  # the new function runs; `calls = 100` was not run again
    # `reload` typed twice: the second one has nothing left to apply.
    assert out.count("no function or class changed") == 1, out
    quit_session(env, proc)


def test_a_syntax_error_or_a_failing_definition_changes_nothing(env, runtime_dir, start, tmp_path):
    path = program(tmp_path, "reload_kinds.py")
    proc = crashed(start, env, runtime_dir, path)
    edit(path, ("return x + 1", "return x + 2"), ("calls = 0", "calls = 0\ndef broken(:"))
    out = commands(env, proc.pid, "reload", "p f(2)")
    assert "reload_kinds.py: not reloaded: SyntaxError: invalid syntax (line 47)" in out, out
    assert "> 3\n" in out, out  # f is the one the program started with
    edit(path, ("def broken(:", ""), ("n=1,", "n=undefined_name,"))
    out = commands(env, proc.pid, "reload", "p f(2)")
    assert (
        "reload_kinds.py: not reloaded: NameError: name 'undefined_name' is not defined" in out
    ), out
    assert "> 3\n" in out, out
    edit(path, ("n=undefined_name,", "n=1,"))
    out = commands(env, proc.pid, "reload", "p f(2)")
    assert "reload_kinds.py: f\n" in out and "> 4\n" in out, out
    quit_session(env, proc)


def test_two_quick_saves_after_a_reload_apply_the_last(env, runtime_dir, start, tmp_path):
    # The second and third saves come within the file system's timestamp
    # granularity and keep the size: only the content tells them apart.
    path = program(tmp_path, "reload_kinds.py")
    proc = crashed(start, env, runtime_dir, path)
    edit(path, ("return x + 1", "return x + 2"))
    out = commands(env, proc.pid, "reload", "p f(2)")
    assert "reload_kinds.py: f\n" in out and "> 4\n" in out, out
    edit(path, ("return x + 2", "return x + 3"))
    edit(path, ("return x + 3", "return x + 5"))
    out = commands(env, proc.pid, "reload", "p f(2)")
    assert "reload_kinds.py: f\n" in out and "> 7\n" in out, out
    quit_session(env, proc)


def test_watch_applies_each_save(env, start, tmp_path):
    path = program(tmp_path, "reload_watch.py")
    proc = start([PYTHON, path], dict(env, AUTODBG_RELOAD="watch"), cwd=str(tmp_path))
    proc.wait_for("watching")
    edit(path, ("return 1", "return 2"))
    proc.wait_for("value is 2", timeout=30)
    proc.wait_for("autodbg: reloaded reload_watch.py: value\n", timeout=30)
    # Two saves in a row: the watcher applies the file once it holds still,
    # so the program never sees the first one.
    edit(path, ("return 2", "return 4"))
    edit(path, ("return 4", "return 3"))
    assert proc.wait(30) == 0
    assert proc.output.count("autodbg: reloaded") in (1, 2), proc.output
    assert "value is 3" in proc.output and "value is 4" not in proc.output, proc.output
