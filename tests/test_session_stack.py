"""`autodbg stack` of a rank in a debugger session: the frames it debugs, not its prompt's.

A session publishes the frames it debugs (a post-mortem session its
traceback, a ``breakpoint()`` the stack where it stopped) and its thread's id;
the CLI shows those for that thread, marked, and leaves out autodbg's,
IPython's and prompt_toolkit's frames and threads.
"""

import json
import os
import subprocess
import sysconfig

import pexpect
import pytest
from harness import BIN, target, wait_for_record

import autodbg
from autodbg import stacks

pytest.importorskip("torch")
pytestmark = [pytest.mark.torch, pytest.mark.slow, pytest.mark.timeout(240)]
TORCHRUN = os.path.join(BIN, "torchrun")
AUTODBG = os.path.join(BIN, "autodbg")
SCRIPT = target("st_breakpoint.py")
MACHINERY = ("IPython", "prompt_toolkit", os.path.dirname(autodbg.__file__))


def stack(env, *args):
    done = subprocess.run(
        [AUTODBG, "stack", *args], env=env, capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def assert_no_machinery(text):
    for sign in MACHINERY:
        assert sign not in text, f"{sign!r} in:\n{text}"


def test_post_mortem_session_shows_its_traceback(env, runtime_dir, start, spawn):
    job = start([TORCHRUN, "--standalone", "--nproc_per_node=2", target("ddp_crash.py")], env)
    record = wait_for_record(runtime_dir, timeout=120, rank=1, state="waiting")
    assert record["thread_id"].startswith("0x")
    assert [f["function"] for f in record["frames"]] == ["<module>", "main", "step"]

    waiting = stack(env, "1")
    assert (
        "main thread (most recent call last), in a debugger session (post-mortem: IndexError"
        in waiting
    )
    assert "waiting for a client" in waiting
    assert "return batch[index] * scale" in waiting and "loss = step(batch, index)" in waiting
    assert_no_machinery(waiting)

    # At the prompt of a client on a pty: IPython's and prompt_toolkit's frames run it.
    cli = spawn(f"{AUTODBG} attach 1", env)
    cli.expect("ipdb>")
    wait_for_record(runtime_dir, rank=1, state="attached")
    attached = stack(env, "1")
    assert "in a debugger session (post-mortem: IndexError: list index out of range)" in attached
    assert_no_machinery(attached)
    entry = json.loads(stack(env, "1", "--json"))[0]
    assert entry["session"]["reason"] == "exception"
    thread = entry["threads"][0]
    assert thread["session"] == entry["session"] and thread["main"]
    assert [f["function"] for f in thread["frames"]] == ["<module>", "main", "step"]
    assert_no_machinery(json.dumps(entry["threads"]))
    assert "prompt_toolkit" in entry["dump"]  # faulthandler's own dump, which --json keeps

    # Both ranks: rank 0 waits in all_reduce, rank 1 in its session, each a group.
    both = stack(env, "0", "1")
    assert both.count("in a debugger session") == 1
    assert "rank 0 (pid" in both and "all_reduce" in both
    cli.sendline("q")
    cli.expect(pexpect.EOF)
    job.wait(60)


def test_breakpoint_session_shows_where_it_stopped(env, runtime_dir, start, spawn):
    job = start([TORCHRUN, "--standalone", "--nproc_per_node=2", SCRIPT], env)
    record = wait_for_record(runtime_dir, timeout=120, rank=1, state="waiting")
    cli = spawn(f"{AUTODBG} attach 1", env)
    cli.expect("ipdb>")
    assert [f["function"] for f in record["frames"]] == ["<module>", "main", "pause_here"]
    assert record["frames"][-1]["line"] == 8  # the breakpoint() call

    def stopped_at(line):
        frames = record["frames"][:-1] + [{"file": SCRIPT, "line": line, "function": "pause_here"}]
        return wait_for_record(runtime_dir, rank=1, state="attached", frames=frames)

    stopped_at(9)  # the first stop, on the line after breakpoint()
    cli.sendline("n")  # one line further: the record follows
    stopped_at(10)
    shown = stack(env, "1")
    assert "in a debugger session (stopped at a breakpoint)" in shown
    functions = [
        line.split(", in ")[-1] for line in shown.splitlines() if line.strip().startswith("File")
    ]
    assert functions[:3] == ["<module>", "main", "pause_here"], shown
    assert f'File "{SCRIPT}", line 10, in pause_here' in shown
    assert_no_machinery(shown)
    assert record["reason"] == "breakpoint"
    cli.sendline("c")
    cli.expect(pexpect.EOF)
    assert job.wait(60) == 0


def frames(*functions):
    return [{"file": f"/p/{name}.py", "line": 1, "function": name} for name in functions]


def test_ranks_in_sessions_group_by_their_session_frames():
    # Pure logic beside the end-to-end tests above: the record's frames replace the prompt's.
    threading = os.path.join(sysconfig.get_paths()["stdlib"], "threading.py")
    prompt = [{"file": threading, "line": 1, "function": "_bootstrap"}] + [
        {"file": stacks._AUTODBG_DIR + "session.py", "line": 5, "function": "post_mortem"},
        {"file": "/v/site-packages/prompt_toolkit/app.py", "line": 9, "function": "run"},
    ]

    def result(pid, rank):
        return {
            "pid": pid,
            "rank": rank,
            "answered": True,
            "threads": [
                {
                    "id": "0x01",
                    "main": True,
                    "current": False,
                    "frames": list(prompt),
                    "truncated": False,
                },
                {
                    "id": "0x02",
                    "main": False,
                    "current": False,
                    "frames": list(prompt),
                    "truncated": False,
                },
            ],
        }

    results = [result(10, 0), result(11, 1)]
    for entry, why in zip(results, ("rank 0 fails", "rank 1 fails")):
        record = {
            "reason": "exception",
            "exception": f"ValueError: {why}",
            "state": "attached",
            "thread_id": "0x01",
            "frames": frames("<module>", "main", "fail"),
        }
        stacks.show_session(entry, record)
    assert [len(entry["threads"]) for entry in results] == [1, 1]  # the prompt's thread left out
    grouped = stacks.groups(results)
    assert len(grouped) == 1
    text = stacks.render(results, 1.0)
    assert "ranks 0,1 (pids 10, 11):" in text
    assert (
        "in debugger sessions (post-mortem: ValueError: rank 0 fails (rank 0); "
        "post-mortem: ValueError: rank 1 fails (rank 1))"
    ) in text
    assert "in fail" in text and "prompt_toolkit" not in text and "post_mortem" not in text
