"""`autodbg stack`: every rank of a hung torchrun job, grouped; `kill -USR1` to a file and stderr."""

import glob
import importlib.util
import json
import os
import re
import signal
import subprocess
import time

import pytest
from conftest import PYTHON
from harness import BIN, Proc, records, target, wait_until

from autodbg import stacks

torch_job = pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="needs torch")
TORCHRUN = os.path.join(BIN, "torchrun")
AUTODBG = os.path.join(BIN, "autodbg")
SCRIPT = target("ddp_hang.py")


def hung_job(start, env):
    """Start the 4-rank job; return it and {rank: pid} once every rank printed its line."""
    job = start([TORCHRUN, "--standalone", "--nproc_per_node=4", SCRIPT], env)
    for rank in range(4):
        job.wait_for(f"rank {rank} pid", timeout=120)
    pids = {int(r): int(p) for r, p in re.findall(r"rank (\d) pid (\d+) ready", job.output)}
    return job, pids


def stack(env, *args):
    return subprocess.run(
        [AUTODBG, "stack", *args], env=env, capture_output=True, text=True, timeout=30, check=False
    )


def innermost(entry):
    return entry["threads"][0]["frames"][-1]["function"] if entry["threads"] else None


@torch_job
@pytest.mark.torch
@pytest.mark.timeout(180)
def test_stack_all_groups_the_hung_ranks(env, start):
    _, pids = hung_job(start, env)

    def settled():
        out = stack(env, "--all", "--json")
        entries = json.loads(out.stdout) if out.returncode == 0 else []
        where = {e["rank"]: innermost(e) for e in entries}
        return (
            entries
            if where == {0: "all_reduce", 1: "slow_step", 2: "all_reduce", 3: "all_reduce"}
            else None
        )

    entries = wait_until(settled, 60, "ranks 0, 2, 3 in all_reduce and rank 1 in slow_step")
    assert sorted(e["rank"] for e in entries) == [
        0,
        1,
        2,
        3,
    ]  # one entry per rank, not the launcher
    assert {e["rank"]: e["pid"] for e in entries} == pids
    assert all(e["answered"] and e["world_size"] == 4 for e in entries)
    main = entries[1]["threads"][0]
    assert main["main"] and [f["function"] for f in main["frames"]][-3:] == [
        "<module>",
        "main",
        "slow_step",
    ]

    began = time.monotonic()
    out = stack(env, "--all")
    took = time.monotonic() - began
    assert out.returncode == 0, out.stderr
    assert took < 2, took
    blocks = [b for b in out.stdout.split("\n\n") if b.strip()]
    assert len(blocks) == 2, out.stdout
    assert blocks[0].startswith(f"rank 1 (pid {pids[1]}):")  # the odd one out first
    assert f'{SCRIPT}", line 10, in slow_step' in blocks[0]
    assert "time.sleep(600)" in blocks[0]  # the source line
    assert blocks[1].startswith(f"ranks 0,2,3 (pids {pids[0]}, {pids[2]}, {pids[3]}):")
    assert f'{SCRIPT}", line 14, in sync' in blocks[1] and "in all_reduce" in blocks[1]
    # autodbg's own thread is left out of rank 1's block, which shows all its threads.
    assert "in _serve" not in out.stdout and "autodbg/guard.py" not in out.stdout

    rich = stack(env, "--all", "--locals")  # the Python path: all_reduce releases the GIL
    assert rich.returncode == 0, rich.stderr
    blocks = [b for b in rich.stdout.split("\n\n") if b.strip()]
    assert len(blocks) == 2, rich.stdout
    assert "        rank = 1\n" in blocks[0]
    assert "        rank = 0 (rank 0); 2 (rank 2); 3 (rank 3)\n" in blocks[1]
    assert "        tensor = tensor(shape=(2,), dtype=torch.float32, device=cpu)\n" in blocks[1]
    assert "__name__" not in rich.stdout  # a module's frame shows no locals: they are its globals

    by_rank = stack(env, "2", "3")
    assert by_rank.returncode == 0, by_rank.stderr
    assert by_rank.stdout.startswith(f"ranks 2,3 (pids {pids[2]}, {pids[3]}):")
    assert stack(env).returncode == 2
    assert stack(env, "9").returncode == 1


@torch_job
@pytest.mark.torch
@pytest.mark.timeout(180)
def test_usr1_on_a_rank_blocked_in_all_reduce_dumps_to_file_and_stderr(env, start, runtime_dir):
    job, pids = hung_job(start, env)
    pid = pids[0]
    (path,) = glob.glob(os.path.join(runtime_dir, "*", f"{pid}.stack"))
    before = os.path.getsize(path)
    seen = job.output.count("in sync")

    def dumped_in_all_reduce():
        sent = time.monotonic()
        os.kill(pid, signal.SIGUSR1)  # by hand, without the CLI
        try:
            wait_until(lambda: os.path.getsize(path) > before, 5, f"a dump in {path}")
            return wait_until(
                lambda: "in all_reduce" in open(path).read()[before:] and sent, 1, "all_reduce"
            )
        except AssertionError:
            return None  # caught between its print and the collective: ask again

    sent = wait_until(dumped_in_all_reduce, 30, "a dump from inside all_reduce")
    in_file = time.monotonic() - sent
    job.wait_for("in sync", count=seen + 1, timeout=5)  # the copy on the rank's stderr
    on_stderr = time.monotonic() - sent
    assert in_file < 1.5 and on_stderr < 5  # the process-group timeout is 7200 s
    assert f'File "{SCRIPT}", line 14 in sync' in job.output


def test_a_forked_child_gets_a_stack_file_of_its_own(env, start, runtime_dir):
    proc = start([PYTHON, target("forking.py")], env)
    proc.wait_for("parent")
    proc.wait_for("child")
    parent = int(re.search(r"parent (\d+) ready", proc.output).group(1))
    child = int(re.search(r"child (\d+) ready", proc.output).group(1))
    out = stack(env, "--all", "--json")
    assert out.returncode == 0, out.stderr
    entries = {e["pid"]: e for e in json.loads(out.stdout)}
    assert set(entries) == {parent, child}
    assert entries[child]["parent_pid"] == parent and entries[parent]["parent_pid"] is None
    # Each file says its host: on a runtime directory shared by hosts, only this one's are asked.
    assert {e["host"] for e in entries.values()} == {os.uname().nodename}
    assert (
        innermost(entries[child]) == "child_waits" and innermost(entries[parent]) == "parent_waits"
    )
    text = stack(env, str(child)).stdout
    assert (
        text.startswith(f"pid {child}:") and "in child_waits" in text and "parent_waits" not in text
    )
    files = {
        pid: glob.glob(os.path.join(runtime_dir, "*", f"{pid}.stack"))[0] for pid in (parent, child)
    }
    sizes = {pid: os.path.getsize(path) for pid, path in files.items()}
    seen = proc.output.count("in parent_waits")
    os.kill(parent, signal.SIGUSR1)  # by hand: to the parent's file and stderr, not the child's
    wait_until(lambda: os.path.getsize(files[parent]) > sizes[parent], 10, "the parent's dump")
    proc.wait_for("in parent_waits", count=seen + 1, timeout=10)
    assert os.path.getsize(files[child]) == sizes[child]


def fault_in_the_stack_thread(env, fault):
    """Start stack_thread_fault.py with ``fault``; return it and its pid once it is ready.

    Not through the ``start`` fixture: the test expects autodbg's internal-error line.
    """
    proc = Proc([PYTHON, target("stack_thread_fault.py"), fault], env)
    proc.wait_for("ready")
    return proc, int(re.search(r"pid (\d+) ready", proc.output).group(1))


def test_an_error_in_the_stack_threads_locals_answer_is_one_line(env, runtime_dir):
    proc, pid = fault_in_the_stack_thread(env, "locals")
    try:
        out = stack(env, str(pid), "--locals", "--json")
        assert out.returncode == 0, out.stderr  # the dump came, from faulthandler's C handler
        (entry,) = json.loads(out.stdout)
        assert entry["answered"] and entry["locals"] is False
        line = (
            "autodbg: internal error in the stack-dump thread's --locals answer: "
            "RuntimeError: injected fault"
        )
        proc.wait_for(line, timeout=10)
        # The thread lives on: the next dump is copied to stderr as the first one was.
        proc.wait_for("in main_waits", timeout=10)
        assert stack(env, str(pid)).returncode == 0
        proc.wait_for("in main_waits", count=2, timeout=10)
        assert proc.popen.poll() is None
        assert proc.output.count("autodbg:") == 1 and "Traceback" not in proc.output, proc.output
        assert "waiting up to" not in proc.output and records(runtime_dir) == []  # no session
    finally:
        proc.kill()


def test_an_error_in_the_stack_threads_loop_is_one_line(env, runtime_dir):
    proc, pid = fault_in_the_stack_thread(env, "loop")
    try:
        proc.wait_for("autodbg: internal error in the stack-dump thread: TypeError: ", timeout=10)
        out = stack(env, str(pid), "--json")  # dumps still reach the file; the process runs on
        assert out.returncode == 0, out.stderr
        (entry,) = json.loads(out.stdout)
        assert entry["answered"] and innermost(entry) == "main_waits"
        assert proc.popen.poll() is None
        assert proc.output.count("autodbg:") == 1 and "Traceback" not in proc.output, proc.output
        assert "waiting up to" not in proc.output and records(runtime_dir) == []  # no session
    finally:
        proc.kill()


DUMP = """\
Thread 0x00007f0000000002 (most recent call first):
  File "/usr/lib/python3.11/threading.py", line 320 in wait
  File "/srv/train.py", line 12 in loader

Current thread 0x00007f0000000001 (most recent call first):
  File "/srv/train.py", line 80 in step
  File "/srv/train.py", line 90 in <module>
"""


def test_parse_puts_the_main_thread_first_outermost_frame_first():
    threads = stacks.parse(DUMP, main_thread=0x7F0000000001)
    assert [t["id"] for t in threads] == ["0x00007f0000000001", "0x00007f0000000002"]
    assert threads[0]["main"] and threads[0]["current"] and not threads[1]["main"]
    assert [(f["line"], f["function"]) for f in threads[0]["frames"]] == [
        (90, "<module>"),
        (80, "step"),
    ]
    assert stacks.last_dump(
        '{"pid": 1}\n' + DUMP + DUMP.replace("line 80", "line 81")
    ) == DUMP.replace("line 80", "line 81")


def test_groups_put_the_odd_ones_out_first():
    def result(rank, line):
        dump = DUMP.replace("line 80", f"line {line}")
        return {
            "pid": 100 + rank,
            "rank": rank,
            "answered": True,
            "threads": stacks.parse(dump, 0x7F0000000001),
        }

    results = [result(0, 71), result(1, 80), result(2, 71), result(3, 71)]
    groups = stacks.groups(results)
    assert [[r["rank"] for r in g] for g in groups] == [[1], [0, 2, 3]]
    assert stacks.who(groups[1]) == "ranks 0,2,3 (pids 100, 102, 103)"
    text = stacks.render(results, 1.5)
    assert (
        text.index("rank 1 (pid 101):") < text.index("ranks 0,2,3")
        and "+ 1 other thread each" in text
    )


def test_short_repr_never_calls_a_programs_repr():
    class Loud:
        def __repr__(self):
            raise AssertionError("called")

    assert stacks.short_repr([1, "a", Loud()]).startswith("[1, 'a', <")
    assert len(stacks.short_repr("x" * 1000)) <= stacks.MAX_REPR
