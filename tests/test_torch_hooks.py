"""torch.distributed seen from a rank: process-group timeout, rank from init_process_group,
torch.distributed.breakpoint(), collateral failures; and the torch behaviour relied on."""

import inspect
import os
import socket

import pexpect
import pytest

from conftest import PYTHON
from harness import BIN, target, wait_for_record

torch = pytest.importorskip("torch")
pytestmark = [pytest.mark.torch, pytest.mark.timeout(180)]
TORCHRUN = os.path.join(BIN, "torchrun")
AUTODBG = os.path.join(BIN, "autodbg")


@pytest.mark.parametrize(
    "passed, configured, effective",
    [("none", None, 7200), ("none", "1234", 1234), ("600", None, 600), ("9000", "100", 9000)],
)
def test_effective_process_group_timeout(env, runtime_dir, start, passed, configured, effective):
    if configured:
        env["AUTODBG_PG_TIMEOUT"] = configured
    proc = start([PYTHON, target("pg_timeout.py"), passed], env)
    proc.wait_for(f"effective timeout {effective}\n")
    notice = "the program sets a process-group timeout of 600 s"
    assert (notice in proc.output) == (passed == "600")
    # The rank came from init_process_group's arguments: the environment has none.
    record = wait_for_record(runtime_dir, pid=proc.pid)
    assert (record["rank"], record["world_size"], record["exception"]) == (0, 1, "KeyError: 'after init'")


def test_collateral_timeout_opens_no_session(env, runtime_dir, start, spawn):
    job = start([TORCHRUN, "--standalone", "--nproc_per_node=2", target("short_timeout.py")], env)
    record = wait_for_record(runtime_dir, timeout=120, rank=1, state="waiting")
    job.wait_for("(collateral, not this rank", timeout=60)
    assert "because rank 1 is in a debugger session (collateral, not this rank's bug)" in job.output
    nc = spawn(f"nc -U {record['socket']}", env)
    nc.expect("ipdb> ")
    nc.sendline("q")
    nc.expect(pexpect.EOF)
    assert job.wait(30) != 0


def test_distributed_breakpoint_with_filtered_output(env, runtime_dir, start, spawn):
    job = start(
        [TORCHRUN, "--standalone", "--nproc_per_node=2", "--local-ranks-filter", "0", target("dist_breakpoint.py")],
        env,
    )
    record = wait_for_record(runtime_dir, timeout=120, rank=1, state="waiting")
    assert record["reason"] == "breakpoint"
    job.wait_for("autodbg: rank 1 is in a debugger session: breakpoint()")  # the launcher says it
    nc = spawn(f"nc -U {record['socket']}", env)
    nc.expect("Type 'up' to get to the frame that called dist.breakpoint")
    nc.expect("ipdb> ")
    nc.sendline("up")
    nc.expect("ipdb> ")
    nc.sendline("p value.item()")
    nc.expect("2.0")
    nc.sendline("c")
    nc.expect(pexpect.EOF)
    job.wait_for("rank 0 sum 3")
    assert job.wait(60) == 0


def test_mp_spawn_ddp_rank_is_attachable_by_rank(env, runtime_dir, start, spawn):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    job = start([PYTHON, target("spawn_ddp.py"), str(port)], env)
    record = wait_for_record(runtime_dir, timeout=120, rank=1, state="waiting")
    assert record["world_size"] == 3 and record["role"] == "spawn process 1"
    cli = spawn(f"{AUTODBG} attach 1", env)
    cli.expect("ipdb>")
    cli.sendline("p shard, rank * 100")
    cli.expect(r"\(\[1, 2\], 100\)")
    cli.sendline("q")
    cli.expect(pexpect.EOF)
    assert job.wait(60) != 0
    assert "IndexError: list index out of range" in job.output  # the parent's report, as torch prints it


def test_no_torch_import_by_autodbg(env, start):
    env["AUTODBG_WAIT"] = "1"
    proc = start([PYTHON, target("no_torch.py")], env)
    assert proc.wait(30) == 1
    assert "no debugger attached within 1 s" in proc.output
    assert "torch loaded: False" in proc.output


# The torch behaviour autodbg relies on (see autodbg/torch_hooks.py and autodbg/launcher.py):
# if an upgrade changes one, its test fails here first.


def test_torch_wraps_excepthook_in_init_process_group():
    from torch.distributed import distributed_c10d

    source = inspect.getsource(distributed_c10d._new_process_group_helper) + inspect.getsource(
        distributed_c10d.init_process_group
    )
    assert "def _distributed_excepthook" in source and "sys.excepthook = _distributed_excepthook" in source


def test_torch_breakpoint_uses_make_distributed_pdb():
    import torch.distributed as dist

    source = inspect.getsource(dist.breakpoint)
    assert "_make_distributed_pdb()" in source and ".set_trace()" in source and "barrier()" in source


def test_init_process_group_takes_timeout():
    from torch.distributed import distributed_c10d

    assert "timeout" in inspect.signature(distributed_c10d.init_process_group).parameters


def test_elastic_launcher_closes_workers_through_pcontext_close():
    from torch.distributed.elastic.agent.server import local_elastic_agent
    from torch.distributed.elastic.multiprocessing import api

    assert list(inspect.signature(api.PContext.close).parameters) == ["self", "death_sig", "timeout"]
    assert "self.close()" in inspect.getsource(api.SubprocessContext._poll)  # a worker failed
    assert "self._pcontext.close(death_sig, timeout)" in inspect.getsource(local_elastic_agent.LocalElasticAgent._shutdown)
    assert "_start_workers" in vars(local_elastic_agent.LocalElasticAgent)


def test_elastic_launcher_signal_handler_and_worker_sessions():
    from torch.distributed.elastic.multiprocessing import api
    from torch.distributed.elastic.multiprocessing.subprocess_handler import subprocess_handler

    assert "signal.signal(sig, _terminate_process_handler)" in inspect.getsource(api.PContext.start)
    assert "kwargs[\"start_new_session\"] = True" in inspect.getsource(subprocess_handler)
