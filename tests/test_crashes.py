"""Crash records (`autodbg show`) and py-spy friendliness (Yama's PR_SET_PTRACER)."""

import json
import os
import subprocess
import time

import pytest
from conftest import PYTHON
from harness import BIN, target

AUTODBG = os.path.join(BIN, "autodbg")


def show(env, *args):
    return subprocess.run(
        [AUTODBG, "show", *args], env=env, capture_output=True, text=True, timeout=30, check=False
    )


def crash_files(runtime_dir):
    found = []
    for folder, _, names in os.walk(os.path.join(runtime_dir, "crashes")):
        found += [os.path.join(folder, n) for n in names if n.endswith(".json")]
    return found


def test_crash_nobody_attached_to_is_kept(env, runtime_dir, start):
    env["AUTODBG_WAIT"] = "1"
    proc = start([PYTHON, target("crash.py")], env)
    assert proc.wait(60) == 1  # as without autodbg
    assert f"(crash record: autodbg show {proc.pid})" in proc.output

    # The process is gone; the record is not.
    out = show(env)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert f"crash of pid {proc.pid}" in text
    assert "IndexError: list index out of range" in text
    assert "Traceback (most recent call last):" in text and "return items[5]" in text
    assert "    secret = 42" in text and "    items = [1, 2]" in text  # locals of the failing frame
    assert f"argv: {target('crash.py')}" in text

    by_pid = show(env, str(proc.pid), "--json")
    assert by_pid.returncode == 0, by_pid.stderr
    record = json.loads(by_pid.stdout)
    assert (record["pid"], record["rank"], record["job"]) == (proc.pid, None, env_job(runtime_dir))
    assert record["exception"] == "IndexError: list index out of range"
    assert record["where"] == f"{target('crash.py')}:6 in f"
    assert record["frames"][-1]["locals"] == {"items": "[1, 2]", "secret": "42"}
    assert record["argv"] == [target("crash.py")] and record["truncated"] is False

    # Stored privately: 0700 folders, a 0600 file.
    (path,) = crash_files(runtime_dir)
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert os.stat(os.path.dirname(path)).st_mode & 0o777 == 0o700
    assert os.stat(os.path.join(runtime_dir, "crashes")).st_mode & 0o777 == 0o700

    listed = show(env, "--list")
    assert listed.returncode == 0 and str(proc.pid) in listed.stdout.splitlines()[1]


def env_job(runtime_dir):
    (job,) = os.listdir(os.path.join(runtime_dir, "crashes"))
    return job


def test_show_missing_is_one_line(env, runtime_dir):
    nothing = show(env)
    assert nothing.returncode == 1 and nothing.stdout == ""
    assert (
        nothing.stderr.startswith("autodbg: no crash records")
        and len(nothing.stderr.splitlines()) == 1
    )
    missing = show(env, "4194303")
    assert missing.returncode == 1 and missing.stdout == ""
    assert missing.stderr.splitlines() == [
        "autodbg: no crash record for rank or pid 4194303; `autodbg show --list` lists them"
    ]
    assert show(env, "--pid", "7").stderr.startswith("autodbg: no crash record for pid 7;")
    assert show(env, "--rank", "nope").returncode == 2  # a usage error


def test_bounds_per_value_and_per_record(env, runtime_dir, start):
    env["AUTODBG_WAIT"] = "0"
    proc = start([PYTHON, target("crash_locals.py")], env)
    assert proc.wait(60) == 1
    (path,) = crash_files(runtime_dir)
    assert os.path.getsize(path) <= 256 * 1024
    record = json.loads(show(env, str(proc.pid), "--json").stdout)
    failing = record["frames"][-1]["locals"]  # the innermost frame comes first, whole
    assert failing["raising"] == "<repr failed: RuntimeError: no repr for you>"
    assert failing["long"].startswith("'xxx") and len(failing["long"]) <= 200
    assert failing["answer"] == "42"
    module = record["frames"][0]
    assert module["locals_omitted"] > 0 and record["truncated"] is True
    assert all(len(v) <= 200 for v in (module["locals"] or {}).values())
    assert "size bound" in record["note"]
    assert "(crash record" not in proc.output  # no wait, no line about it


def test_blocking_repr_does_not_hold_the_session(env, runtime_dir, start):
    env["AUTODBG_WAIT"] = "0"
    began = time.monotonic()
    proc = start([PYTHON, target("crash_locals.py"), "stuck"], env)
    assert proc.wait(30) == 1
    assert time.monotonic() - began < 20  # the __repr__ sleeps 60 s
    record = json.loads(show(env, str(proc.pid), "--json").stdout)
    assert record["truncated"] is True and "took more than" in record["note"]
    assert record["frames"][-1]["locals"]["raising"].startswith("<repr failed")


def test_retention_on_write(env, runtime_dir, start):
    from autodbg import crashes

    old = os.path.join(runtime_dir, "crashes", "oldjob")
    os.makedirs(old, mode=0o700)
    os.chmod(os.path.join(runtime_dir, "crashes"), 0o700)
    now = time.time()
    for i in range(crashes.KEEP):
        path = os.path.join(old, f"r{i:03d}.json")
        with open(path, "w") as out:
            json.dump({"pid": 1, "host": os.uname().nodename, "time": now - 3600 - i}, out)
        os.utime(path, (now - 3600 - i,) * 2)
    env["AUTODBG_WAIT"] = "0"

    # By count: the new record stays, the oldest goes.
    proc = start([PYTHON, target("crash.py")], env)
    assert proc.wait(60) == 1
    names = {os.path.basename(p) for p in crash_files(runtime_dir)}
    assert len(names) == crashes.KEEP and f"r{crashes.KEEP - 1:03d}.json" not in names
    assert any(name.endswith(f"-{proc.pid}.{os.uname().nodename}.json") for name in names)

    # By age: a record over 14 days old goes, though the count is well under the bound.
    for i in range(50):
        os.unlink(os.path.join(old, f"r{i:03d}.json"))
    ancient = os.path.join(old, "r060.json")
    os.utime(ancient, (now - crashes.MAX_AGE - 60,) * 2)
    proc = start([PYTHON, target("crash.py")], env)
    assert proc.wait(60) == 1
    left = crash_files(runtime_dir)
    assert len(left) == crashes.KEEP - 50 and ancient not in left


def test_expired_keeps_the_newest_within_age():
    from autodbg import crashes

    now = 1_000_000.0
    entries = [(f"p{i}", now - i * 60) for i in range(10)] + [("ancient", now - 15 * 24 * 3600)]
    assert crashes.expired(entries, now, keep=100) == ["ancient"]
    assert crashes.expired(entries, now, keep=3) == [f"p{i}" for i in range(3, 10)] + ["ancient"]
    assert crashes.expired(entries, now, keep=3, max_age=150) == [f"p{i}" for i in range(3, 10)] + [
        "ancient"
    ]
    assert crashes.expired(entries, now, keep=100, max_age=150) == [
        f"p{i}" for i in range(3, 10)
    ] + ["ancient"]
    assert crashes.expired([], now) == []


def test_short_reprs():
    from autodbg import crashes

    class Odd:
        def __repr__(self):
            return 17

    reprs = crashes._Bounded()
    assert crashes._short(reprs, Odd()).startswith("<repr failed")
    assert len(crashes._short(reprs, list(range(10**6)))) <= 200
    assert (
        len(crashes._short(reprs, 10**5000)) <= 200
    )  # past int's str limit: a failed repr, bounded
    nested = {"a": [[[["deep"]]]]}
    assert crashes._short(reprs, nested) == "{'a': [[[...]]]}"


# py-spy friendliness -------------------------------------------------------


def test_ptrace_scope_reading(tmp_path):
    from autodbg import ptrace

    assert ptrace.scope(str(tmp_path / "missing")) is None
    for text, value in (("1\n", 1), ("0", 0), ("3\n", 3), ("junk", None)):
        (tmp_path / "scope").write_text(text)
        assert ptrace.scope(str(tmp_path / "scope")) == value


def test_ptrace_hook_waits_for_ctypes(env):
    # Start-up stays light: ctypes (about 3 ms) is not imported for this.
    code = "import sys; print('ctypes' in sys.modules, 'autodbg.ptrace' in sys.modules)"
    out = subprocess.run(
        [PYTHON, "-c", code], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert out.stdout.split() == ["False", "False"] and out.stderr == ""
    # Once the program imports ctypes (torch does), the hook runs, quietly.
    code = "import ctypes, sys; print('autodbg.ptrace' in sys.modules)"
    out = subprocess.run(
        [PYTHON, "-c", code], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert out.stdout.split() == ["True"] and out.stderr == ""


TRACER = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.ptrace.argtypes = (ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p)
pid = int(sys.argv[1])
if libc.ptrace(16, pid, None, None) != 0:  # PTRACE_ATTACH
    print("refused", os.strerror(ctypes.get_errno()))
    sys.exit(0)
os.waitpid(pid, 0)
libc.ptrace(17, pid, None, None)  # PTRACE_DETACH
print("attached")
"""


@pytest.mark.skipif(
    __import__("autodbg.ptrace").ptrace.scope() != 1,
    reason="needs Yama ptrace_scope 1 (/proc/sys/kernel/yama/ptrace_scope); this kernel has "
    + ("no Yama" if __import__("autodbg.ptrace").ptrace.scope() is None else "another scope"),
)
@pytest.mark.parametrize("autodbg_on", [True, False], ids=["autodbg", "without"])
def test_sibling_debugger_may_attach(env, start, autodbg_on):
    # /proc/<pid>/status does not show a PR_SET_PTRACER exception; what shows it
    # is an attach by a process that is not the target's ancestor, as py-spy is.
    if not autodbg_on:
        if os.geteuid() == 0:
            pytest.skip("root may ptrace anything under scope 1: the control says nothing")
        env["AUTODBG"] = "0"
    proc = start([PYTHON, target("yama_sleeper.py")], env)
    proc.wait_for("ready")
    tracer = subprocess.run(
        [PYTHON, "-c", TRACER, str(proc.pid)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert tracer.stdout.startswith("attached" if autodbg_on else "refused"), (
        tracer.stdout + tracer.stderr
    )


def test_ptrace_prctl_under_scope_1(tmp_path):
    from autodbg import ptrace

    (tmp_path / "scope").write_text("1\n")
    code = f"from autodbg import ptrace; ptrace.SCOPE_PATH = {str(tmp_path / 'scope')!r}; print(ptrace.allow())"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTODBG")}
    out = subprocess.run(
        [PYTHON, "-c", code], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    if ptrace.scope() is None:
        # No Yama: the kernel refuses PR_SET_PTRACER (EINVAL), and autodbg says so in one line.
        assert out.stdout.split() == ["False"]
        (line,) = out.stderr.splitlines()
        assert line.startswith(
            "autodbg: cannot let debuggers attach: prctl(PR_SET_PTRACER) failed: Invalid argument"
        )
    else:
        assert out.stdout.split() == ["True"] and out.stderr == ""


def test_rank_crash_shown_by_rank_after_the_job(env, runtime_dir, start):
    env["AUTODBG_WAIT"] = "1"
    torchrun = [
        os.path.join(BIN, "torchrun"),
        "--standalone",
        "--nproc_per_node=3",
        target("ddp_crash.py"),
    ]
    job = start(torchrun, env)
    assert job.wait(120) != 0  # torchrun's failure, as without autodbg
    out = show(env, "1")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("crash of rank 1 (pid ") and " of 3 on " in out.stdout
    assert "IndexError: list index out of range" in out.stdout and "    scale = 7" in out.stdout
    record = json.loads(show(env, "--rank", "1", "--json").stdout)
    assert (record["rank"], record["local_rank"], record["world_size"]) == (1, 1, 3)
    assert record["where"] == f"{target('ddp_crash.py')}:10 in step"
    assert show(env, "--job", record["job"], str(record["pid"])).returncode == 0
    assert show(env, "--job", "another", "1").returncode == 1
