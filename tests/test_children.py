"""Sessions in child processes: multiprocessing (fork, spawn, forkserver), torch's spawn, DataLoader workers."""

import os
import subprocess
import sys
import types

import pexpect
import pytest
from conftest import PYTHON
from harness import BIN, records, target, wait_for_record

AUTODBG = os.path.join(BIN, "autodbg")
pytestmark = pytest.mark.timeout(60)


def without_autodbg(start, env, argv):
    """Run ``argv`` as Python would without autodbg; return (exit status, output lines)."""
    reference = start(argv, {k: v for k, v in env.items() if k != "AUTODBG"})
    status = reference.wait(30)
    return status, reference.output.splitlines()


@pytest.mark.parametrize(
    "method, role",
    [("fork", "ForkProcess-1"), ("spawn", "SpawnProcess-1"), ("forkserver", "ForkServerProcess-1")],
)
def test_multiprocessing_child(env, runtime_dir, start, spawn, method, role):
    argv = [PYTHON, target("mp_child.py"), method]
    status, expected = without_autodbg(start, env, argv)
    proc = start(argv, env)
    record = wait_for_record(runtime_dir, role=role, state="waiting", timeout=30)
    assert record["pid"] != proc.pid and record["parent_pid"] == proc.pid
    assert record["rank"] is None and record["parent_rank"] is None
    assert record["where"] == f"{target('mp_child.py')}:9 in work"
    nc = spawn(f"nc -U {record['socket']}", env)
    nc.expect("ipdb> ")
    nc.sendline("p total")
    nc.expect("6")
    nc.sendline("q")
    nc.expect(pexpect.EOF)
    assert proc.wait(30) == status == 0
    # The traceback exactly as multiprocessing prints it, once, before autodbg's line.
    assert [
        line for line in proc.output.splitlines() if not line.startswith("autodbg:")
    ] == expected
    assert "parent: child exit code 1" in expected
    assert proc.output.index("ZeroDivisionError: division by zero\n") < proc.output.index(
        f"autodbg: [{role}]"
    )
    assert records(runtime_dir) == []


def test_fork_while_a_session_is_open(env, runtime_dir, start, spawn):
    proc = start([PYTHON, target("fork_in_session.py")], env)
    parent = wait_for_record(runtime_dir, pid=proc.pid, state="waiting", timeout=30)
    parent_client = spawn(f"nc -U {parent['socket']}", env)
    parent_client.expect("ipdb> ")
    parent_client.sendline("go.set()")  # the program forks now, with this session open and attached
    # The child's own session must not wait for the parent's.
    child = wait_for_record(runtime_dir, role="ForkProcess-1", state="waiting", timeout=30)
    assert child["parent_pid"] == proc.pid and child["socket"] != parent["socket"]

    # The parent's client sees its session end although the child, which holds
    # copies of the parent's descriptors, is still alive in its own session.
    parent_client.sendline("p marker")
    parent_client.expect("thread")
    parent_client.sendline("q")
    parent_client.expect(pexpect.EOF, timeout=10)

    child_client = spawn(f"nc -U {child['socket']}", env)
    child_client.expect("ipdb> ")
    child_client.sendline("p value")
    child_client.expect("7")
    child_client.sendline("q")
    child_client.expect(pexpect.EOF)
    assert proc.wait(30) == 0
    assert "parent: child exit code 1" in proc.output


@pytest.mark.torch
def test_torch_spawn_process(env, runtime_dir, start, spawn):
    pytest.importorskip("torch")
    proc = start([PYTHON, target("spawn_crash.py")], env)
    record = wait_for_record(runtime_dir, role="spawn process 1", state="waiting", timeout=30)
    assert record["parent_pid"] == proc.pid
    assert record["exception"] == "IndexError: list index out of range"
    proc.wait_for(f"autodbg attach {record['pid']}")
    assert "Traceback" not in proc.output  # the child prints nothing but the one autodbg line

    cli = spawn(f"{AUTODBG} attach {record['pid']}", env)
    cli.expect("ipdb>")
    cli.sendline("p values")
    cli.expect(r"\[0, 1, 2\]")
    cli.sendline("q")
    cli.expect(pexpect.EOF)
    assert proc.wait(30) == 1
    out = proc.output
    # The parent raises as torch does, with the child's traceback as _wrap formatted it.
    assert (
        "ProcessRaisedException" in out
        and "-- Process 1 terminated with the following error:" in out
    )
    assert (
        'spawn.py", line' in out
        and "in _wrap\n    fn(i, *args)\n" in out
        and "children.py" not in out
    )
    assert (
        f"autodbg: ProcessRaisedException because spawn process 1 (pid {record['pid']}) failed (collateral"
        in out
    )
    assert out.count("waiting up to") == 1  # no session in the parent
    assert records(runtime_dir) == []


@pytest.mark.torch
def test_dataloader_worker(env, runtime_dir, start, spawn):
    pytest.importorskip("torch")
    env.update(RANK="1", LOCAL_RANK="1", WORLD_SIZE="2")  # as torchrun gives rank 1
    proc = start([PYTHON, target("loader_crash.py")], env)
    record = wait_for_record(runtime_dir, role="DataLoader worker 1", state="waiting", timeout=30)
    assert record["parent_pid"] == proc.pid and record["parent_rank"] == 1
    assert record["where"] == f"{target('loader_crash.py')}:14 in __getitem__"
    listing = subprocess.run(
        [AUTODBG, "ls"], env=env, capture_output=True, text=True, timeout=30, check=True
    )
    rows = listing.stdout.splitlines()
    assert "ROLE" in rows[0]
    assert any(
        "DataLoader worker 1" in row and str(record["pid"]) in row and " 1/2 " in row
        for row in rows
    )

    nc = spawn(f"nc -U {record['socket']}", env)
    nc.expect("ipdb> ")
    nc.sendline("p index, square")
    nc.expect(r"\(5, 25\)")
    nc.sendline("q")
    nc.expect(pexpect.EOF)
    assert proc.wait(30) == 1
    out = proc.output
    assert "ValueError: Caught ValueError in DataLoader worker process 1." in out
    assert "autodbg: [rank 1] ValueError re-raised from DataLoader worker 1 (collateral" in out
    assert out.count("waiting up to") == 1  # no session in the main process
    assert records(runtime_dir) == []


@pytest.mark.torch
def test_child_wrappers_give_way_when_autodbg_fails(monkeypatch, capfd):
    # autodbg's part failing, forced with a broken post_mortem (the tests above show it working):
    # one line each, and what torch's functions do, whatever way they are called.
    torch_utils = pytest.importorskip("torch._utils")
    from autodbg import children, hooks

    def broken(exc, tb):
        raise RuntimeError("autodbg's part broke")

    monkeypatch.setattr(hooks, "post_mortem", broken)
    worker = types.SimpleNamespace(ExceptionWrapper=torch_utils.ExceptionWrapper)
    children._patch_worker_exceptions(worker)
    try:
        raise ValueError("the dataset's own")
    except ValueError:
        wrapped = worker.ExceptionWrapper(where="in DataLoader worker process 0")
    assert type(wrapped) is torch_utils.ExceptionWrapper
    assert wrapped.where == "in DataLoader worker process 0"
    assert wrapped.exc_msg.endswith("ValueError: the dataset's own\n")

    def _wrap(fn, i, args, error_file):  # ends a failed child as torch.multiprocessing.spawn's does
        try:
            fn(i, *args)
        except Exception:
            sys.exit(1)

    spawn = types.SimpleNamespace(_wrap=_wrap)
    children._patch_spawn_wrap(spawn)
    assert spawn._wrap.__wrapped__ is _wrap
    with pytest.raises(SystemExit) as exit:
        spawn._wrap(fn=lambda i: 1 / i, i=0, args=(), error_file=None)
    assert exit.value.code == 1 and isinstance(exit.value.__context__, ZeroDivisionError)
    lines = capfd.readouterr().err.splitlines()
    assert lines == [
        "autodbg: internal error in a DataLoader worker: RuntimeError: autodbg's part broke",
        "autodbg: internal error in torch.multiprocessing.spawn's child: RuntimeError: autodbg's part broke",
    ]


def test_child_identity_and_label():
    from autodbg import identity

    rank = identity.Identity(1, 1, 3, "job", "host")
    worker = rank.child("DataLoader worker 0", 100)
    assert (worker.rank, worker.world_size, worker.parent_rank, worker.parent_pid) == (1, 3, 1, 100)
    assert worker.label() == "[rank 1 / DataLoader worker 0] "
    assert (
        identity.Identity(None, None, None, "job", "host").child("Process-1", 5).label()
        == "[Process-1] "
    )
