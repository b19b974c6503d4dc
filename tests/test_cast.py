"""`autodbg cast`: one read-only command on many ranks, answered from autodbg's stack thread."""

import glob
import importlib.util
import json
import os
import re
import signal
import subprocess
import time
import types

import pytest
from conftest import PYTHON
from harness import BIN, records, target, wait_until

from autodbg import cast, frames, readonly

torch_job = pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="needs torch")
TORCHRUN = os.path.join(BIN, "torchrun")
AUTODBG = os.path.join(BIN, "autodbg")


def run_cast(env, *args, timeout=5):
    """Run ``autodbg cast ARGS``; return the completed process and how long it took (seconds)."""
    began = time.monotonic()
    out = subprocess.run(
        [AUTODBG, "cast", *args, "--timeout", str(timeout)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return out, time.monotonic() - began


def leftovers(runtime_dir):
    """Request and answer files anywhere in the runtime directory (cast leaves none)."""
    return [
        path
        for path in glob.glob(os.path.join(runtime_dir, "**", "*"), recursive=True)
        if path.endswith((".cast", ".answer", ".tmp"))
    ]


@torch_job
@pytest.mark.torch
@pytest.mark.slow
@pytest.mark.timeout(180)
def test_cast_asks_every_rank_of_a_hung_job_and_changes_nothing(env, start, runtime_dir, tmp_path):
    release = tmp_path / "release"
    job = start(
        [TORCHRUN, "--standalone", "--nproc_per_node=3", target("cast_hang.py"), str(release)], env
    )
    for rank in range(3):
        job.wait_for(f"rank {rank} pid", timeout=120)
    job.wait_for("rank 1 looping")
    pids = {int(r): int(p) for r, p in re.findall(r"rank (\d) pid (\d+) ready", job.output)}

    def ready():
        # The ranks blocked in all_reduce answer from main(), once they got there.
        out, _ = run_cast(env, "all", "p rank")
        return out if out.stdout.count(" in main: ") == 2 else None

    wait_until(ready, 60, "ranks 0 and 2 in all_reduce")
    out, took = run_cast(env, "all", "p rank")
    assert out.returncode == 0, out.stderr
    assert took < 10
    assert out.stdout.splitlines() == [
        f"rank 0 (pid {pids[0]}) in main: 0",
        f"rank 1 (pid {pids[1]}) in spin: 1",  # the looping rank answers too
        f"rank 2 (pid {pids[2]}) in main: 2",
    ]

    out, took = run_cast(env, "all", "p step")
    assert out.returncode == 0 and took < 10, out.stderr
    first, second = out.stdout.splitlines()
    step = int(first.split(": ")[1])
    assert first == f"rank 1 (pid {pids[1]}) in spin: {step}" and step > 0  # the odd one out first
    assert second == f"ranks 0,2 (pids {pids[0]}, {pids[2]}) in main: 0"

    out, _ = run_cast(env, "1", "p step", "--json")
    (entry,) = json.loads(out.stdout)
    assert entry["answered"] and entry["rank"] == 1 and entry["pid"] == pids[1]
    assert int(entry["answer"]) > step  # its loop goes on
    assert entry["frame"] == {"file": target("cast_hang.py"), "line": 18, "function": "spin"}

    out, _ = run_cast(env, "0,2", "w")
    assert out.returncode == 0
    assert (
        f"> {target('cast_hang.py')}(33)main()\n    -> dist.all_reduce(torch.ones(1))" in out.stdout
    )
    out, _ = run_cast(env, "all", "p x")
    assert out.returncode == 0
    assert out.stdout.strip().endswith("*** NameError: name 'x' is not defined"), out.stdout
    for refused in ("p x = 1", "p __import__('os')", "n"):
        out, _ = run_cast(env, "all", refused)
        assert out.returncode == 2 and out.stdout == "", out
        assert len(out.stderr.splitlines()) == 1 and out.stderr.startswith("autodbg: cast: ")

    assert leftovers(runtime_dir) == []
    assert (
        "most recent call first" not in job.output
    )  # no signal, no stack dump on the job's stderr
    release.touch()
    assert job.wait(60) == 0
    for rank in range(3):
        assert f"rank {rank} done: step " in job.output
    final = int(re.search(r"rank 1 done: step (\d+)", job.output).group(1))
    assert final > int(entry["answer"])
    assert job.output.count("threads ['MainThread', 'autodbg-stacks'] trace None") == 3


@torch_job
@pytest.mark.torch
@pytest.mark.slow
@pytest.mark.timeout(180)
def test_cast_answers_in_each_sessions_current_frame(env, start, runtime_dir):
    env["CRASH_RANKS"] = "1,2"
    start([TORCHRUN, "--standalone", "--nproc_per_node=3", target("ddp_crash.py")], env)
    wait_until(
        lambda: len([r for r in records(runtime_dir) if r["state"] == "waiting"]) == 2,
        120,
        "ranks 1 and 2 in sessions",
    )
    pids = {r["rank"]: r["pid"] for r in records(runtime_dir)}
    out, took = run_cast(env, "all", "p index")
    assert out.returncode == 0 and took < 10, out.stderr
    assert out.stdout.splitlines()[-1] == f"ranks 1,2 (pids {pids[1]}, {pids[2]}) in step: 5"

    # A client moves rank 2's session up one frame and detaches: cast follows it.
    moved = subprocess.run(
        [AUTODBG, "attach", "2", "-c", "up"], env=env, capture_output=True, text=True, timeout=60
    )
    assert moved.returncode == 0, moved.stderr
    out, _ = run_cast(env, "1-2", "p scale")
    assert out.stdout.splitlines() == [
        f"rank 1 (pid {pids[1]}) in step: 7",
        f"rank 2 (pid {pids[2]}) in main: *** NameError: name 'scale' is not defined",
    ]
    out, _ = run_cast(env, "2", "p scale", "--frame", "step")
    assert out.stdout == f"rank 2 (pid {pids[2]}) in step: 7\n"
    waiting = [r for r in records(runtime_dir) if r["state"] == "waiting"]
    assert sorted(r["rank"] for r in waiting) == [1, 2]  # the sessions are still there
    assert leftovers(runtime_dir) == []


@pytest.fixture
def blocked(env, start):
    """A rank-like process blocked in C (tests/targets/cast_blocked.py) and its environment."""
    env.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", TORCHELASTIC_RUN_ID="castjob")
    proc = start([PYTHON, target("cast_blocked.py")], env)
    proc.wait_for("ready")
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "TORCHELASTIC_RUN_ID"):
        del env[name]  # the CLI's shell is not a rank
    return proc


def test_cast_never_advances_an_iterator_nor_inserts_a_key(env, blocked, runtime_dir):
    out, _ = run_cast(env, "0", "p [x for x in items]")
    assert out.stdout.endswith(
        "in wait_here: *** refused: iterating a list_iterator would advance it\n"
    )
    for expression in ("list(items)", "sum(items)", "3 in items", "[*items]"):
        out, _ = run_cast(env, "0", f"p {expression}")
        assert "*** refused: iterating a list_iterator" in out.stdout, (expression, out.stdout)
    out, _ = run_cast(env, "0", "p counts['new']")
    assert "*** refused: 'new' is not in this defaultdict; reading it would insert it" in out.stdout
    out, _ = run_cast(env, "0", "p dict(counts), len(counts), counts['seen'], counts.get('x')")
    assert out.stdout.endswith(": ({'seen': 1}, 1, 1, None)\n"), out.stdout
    out, _ = run_cast(env, "0", "--json", "a")
    assert json.loads(out.stdout)[0]["answer"] == ""  # wait_here takes no arguments
    assert leftovers(runtime_dir) == []


def test_a_stopped_rank_and_a_blocking_repr_are_named(env, blocked, runtime_dir):
    os.kill(blocked.pid, signal.SIGSTOP)
    try:
        out, took = run_cast(env, "all", "p 1", timeout=1)
    finally:
        os.kill(blocked.pid, signal.SIGCONT)
    assert out.returncode == 1 and took < 5
    assert out.stdout == (
        f"rank 0 (pid {blocked.pid}): no answer: did not take the request within 1 s: "
        "autodbg's stack thread does not run there (it ended, or the process holds the GIL in C code)\n"
    )
    assert leftovers(runtime_dir) == []  # the request it never took is gone too
    out, _ = run_cast(env, "0", "p 1")
    assert out.returncode == 0 and out.stdout.endswith(" in wait_here: 1\n"), out.stdout

    out, took = run_cast(env, "0", "p held", timeout=2)  # its repr waits for the held lock
    assert out.returncode == 1 and took < 5
    assert "no answer: the command did not end within 1.6 s" in out.stdout, out.stdout
    out, _ = run_cast(env, "0", "p 1")
    assert "the command of an earlier cast is still running here" in out.stdout
    assert leftovers(runtime_dir) == [] and blocked.popen.poll() is None
    assert "most recent call first" not in blocked.output


def test_cast_usage_errors_are_one_line_and_status_2(env, runtime_dir):
    for args in (["0-", "p 1"], ["all", "p"], ["all", "import os"], ["all", "del x"]):
        out, _ = run_cast(env, *args)
        assert out.returncode == 2 and len(out.stderr.splitlines()) == 1, (args, out.stderr)
    out, _ = run_cast(env, "all", "p 1")  # nothing to ask: one line, status 1
    assert out.returncode == 1 and out.stderr.startswith("autodbg: no rank"), out.stderr
    out, _ = run_cast(env, "all", "p 1", "--local", "--json")  # what another node is asked
    assert out.returncode == 1 and json.loads(out.stdout) == []


def test_answers_of_other_nodes_merge_and_a_node_not_reached_is_named():
    from autodbg import transport

    entry = {"rank": 3, "pid": 42, "host": "node1", "world_size": 4, "answered": True}
    entry.update(answer="3", raised=False, error=None, frame=None, seconds=0.1)
    remote = {
        "node1": subprocess.CompletedProcess([], 0, json.dumps([entry]), ""),
        "node2": transport.TransportError("ssh node2: connection refused"),
        "node3": subprocess.CompletedProcess([], 1, "", "autodbg: cast: something\n"),
    }
    merged = cast._remote_results(remote)
    assert merged[0] == entry
    assert [(r["host"], r["error"]) for r in merged[1:]] == [
        ("node2", "ssh node2: connection refused"),
        ("node3", "autodbg: cast: something"),
    ]
    missing = cast._missing(merged, None)  # ranks 0-2 of the world of 4 answered nowhere
    assert [r["rank"] for r in missing] == [0, 1, 2]
    text = cast.render(merged + missing)
    assert text.splitlines()[0] == "rank 3 (pid 42 on node1): 3"
    assert "host node2: no answer: ssh node2: connection refused" in text


# -- pure logic, beside the end-to-end tests above ---------------------------------------------


@pytest.mark.parametrize(
    ("command", "why"),
    [
        ("p x = 1", "an assignment"),
        ("x += 1", "an assignment"),
        ("del x", "a del"),
        ("import os", "an import"),
        ("p (y := 2)", "`:=` assigns"),
        ("p (lambda: 1)()", "only builtins"),
        ("p sorted(xs, key=lambda x: x)", "a lambda"),
        ("p __import__('os')", "names starting with __"),
        ("p ().__class__.__subclasses__()", "attributes starting with __"),
        ("p print(1)", "`print()` is not one of"),
        ("p xs.append(1)", "`.append()` is not a read-only method"),
        ("p t.add_(1)", "`.add_()` is not a read-only method"),
        ("p t.sum(out=t)", "out= writes"),
        ("c", "moves, changes or ends the rank"),
        ("!x = 1", "moves, changes or ends the rank"),
    ],
)
def test_commands_that_could_change_a_rank_are_refused(command, why):
    with pytest.raises(cast.Refused, match=re.escape(why)):
        cast.compile_command(command)


def evaluate(expression, **names):
    kind, code = cast.compile_command(expression)
    return readonly._value(kind, code, types.SimpleNamespace(f_globals={"G": 10}), names)


def test_read_only_expressions_evaluate_as_pdb_p_does():
    assert evaluate("p len(xs) + G", xs=[1, 2]) == "12"
    assert evaluate("xs[1:], d.get('a'), sorted(d.keys())", xs=[1, 2, 3], d={"a": 1}) == (
        "([2, 3], 1, ['a'])"
    )
    assert evaluate("p [x * k for x in xs if x]", xs=[0, 1, 2], k=3) == "[3, 6]"
    assert evaluate("p f'{n:03d}'", n=7) == "'007'"
    assert evaluate("pp d", d={"b": 1, "a": 2}) == "{'a': 2, 'b': 1}"
    assert evaluate("p type(o).__name__", o=1.5) == "'float'"
    with pytest.raises(cast.Refused, match="len here is not the builtin"):
        evaluate("p len(xs)", xs=[1], len=lambda xs: xs.append(0))  # a local named len
    with pytest.raises(cast.Refused, match=r"\.copy\(\) of a Thing"):
        evaluate("p o.copy()", o=type("Thing", (), {"copy": lambda self: 1})())


def test_ranks_parse_as_all_or_ranges():
    assert cast.parse_ranks("all") is None
    assert cast.parse_ranks("0-3,7") == {0, 1, 2, 3, 7}
    for bad in ("", "3-1", "-1", "a", "1,,2"):
        with pytest.raises(ValueError, match="RANKS is `all`"):
            cast.parse_ranks(bad)


def test_render_merges_identical_answers_odd_ones_out_first():
    def result(rank, answer=None, error=None, function="main"):
        return {
            "rank": rank,
            "pid": 100 + rank,
            "host": os.uname().nodename,
            "answered": error is None,
            "answer": answer,
            "error": error,
            "frame": {"file": "t.py", "line": 1, "function": function},
        }

    text = cast.render(
        [
            result(0, "1"),
            result(1, "2", function="spin"),
            result(2, "1"),
            result(3, error="exited"),
            result(4, "a\nb"),
        ]
    )
    assert text.splitlines() == [
        "rank 1 (pid 101) in spin: 2",
        "rank 4 (pid 104) in main:",
        "    a",
        "    b",
        "ranks 0,2 (pids 100, 102) in main: 1",
        "rank 3 (pid 103): no answer: exited",
    ]


def test_the_programs_own_code_is_not_the_library_nor_autodbg():
    assert frames.is_program(target("cast_hang.py"))
    assert frames.is_program("<string>")
    assert not frames.is_program(os.__file__)
    assert not frames.is_program(cast.__file__)
    assert not frames.is_program(pytest.__file__)
    assert not frames.is_program("<frozen importlib._bootstrap>")
