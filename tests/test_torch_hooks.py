"""torch.distributed seen from a rank: process-group timeout, rank from init_process_group,
torch.distributed.breakpoint(), collateral failures; and the torch behaviour relied on."""

import inspect
import os
import socket
import sys

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
    assert (record["rank"], record["world_size"], record["exception"]) == (
        0,
        1,
        "KeyError: 'after init'",
    )


def test_wrong_timeout_type_raises_torchs_own_error(env, start):
    # timeout=30 (an int, not a timedelta): torch's own TypeError, word for word, as without autodbg.
    argv = [PYTHON, target("pg_timeout_int.py")]
    plain = start(argv, {k: v for k, v in env.items() if k != "AUTODBG"})
    assert plain.wait(60) == 0
    patched = start(argv, env)
    assert patched.wait(60) == 0
    assert (
        "builtins.TypeError: Expected timeout argument to be of type datetime.timedelta, got 30\n"
        in plain.output
    )
    assert "raised in _check_valid_timeout (distributed/distributed_c10d.py)\n" in plain.output
    assert patched.output == plain.output


@pytest.mark.parametrize(
    "autodbg, configured, default", [("1", "1234", 1234), (None, "1234", 1800)]
)
def test_every_process_group_gets_the_timeout(env, start, autodbg, configured, default):
    # The default group from init_device_mesh, the mesh's own group, new_group(): AUTODBG_PG_TIMEOUT
    # (gloo's 30 min without autodbg); an explicit timeout is kept, with one notice.
    env["AUTODBG_PG_TIMEOUT"] = configured
    if autodbg is None:
        del env["AUTODBG"]
    proc = start([PYTHON, target("pg_groups_timeout.py")], env)
    assert proc.wait(60) == 0
    lines = proc.output.splitlines()
    for group in ("default", "mesh", "new_group"):
        assert f"{group} {default}" in lines
    assert "explicit 600" in lines
    notice = "the program sets a process-group timeout of 600 s"
    assert proc.output.count(notice) == (autodbg is not None)
    # device_mesh's own import of init_process_group is the wrapper too: autodbg's excepthook on top.
    hook = (
        "autodbg.hooks.excepthook"
        if autodbg
        else "torch.distributed.distributed_c10d._distributed_excepthook"
    )
    assert f"excepthook {hook}" in lines


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
        [
            TORCHRUN,
            "--standalone",
            "--nproc_per_node=2",
            "--local-ranks-filter",
            "0",
            target("dist_breakpoint.py"),
        ],
        env,
    )
    record = wait_for_record(runtime_dir, timeout=120, rank=1, state="waiting")
    assert record["reason"] == "breakpoint"
    job.wait_for("autodbg: rank 1 is in a debugger session: breakpoint()")  # the launcher says it
    # At the line that called it (torch's pdb stops inside torch/distributed/__init__.py).
    assert record["where"] == f"{target('dist_breakpoint.py')}:7 in <module>"
    nc = spawn(f"nc -U {record['socket']}", env)
    nc.expect("the other ranks wait in its barrier")
    nc.expect(r"----> 7 dist.breakpoint\(rank=1\)")
    nc.expect("ipdb> ")
    nc.sendline("p value.item()")
    nc.expect("2.0")
    nc.sendline("n")  # runs the barrier: rank 0 goes on, into the all_reduce
    nc.expect(r"----> 8 dist.all_reduce\(value\)")
    nc.expect("ipdb> ")
    nc.sendline("n")
    nc.expect(r"----> 9 print")
    nc.expect("ipdb> ")
    job.wait_for("rank 0 sum 3")
    nc.sendline("c")
    nc.expect(pexpect.EOF)
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
    assert (
        "IndexError: list index out of range" in job.output
    )  # the parent's report, as torch prints it


def test_no_torch_import_by_autodbg(env, start):
    env["AUTODBG_WAIT"] = "1"
    proc = start([PYTHON, target("no_torch.py")], env)
    assert proc.wait(30) == 1
    assert "no debugger attached within 1 s" in proc.output
    assert "torch loaded: False" in proc.output


# autodbg's part of a wrapper failing, forced with stand-ins (the end-to-end tests above show the
# parts working): one line, and what torch would have done.


def test_init_process_group_wrapper_failure_keeps_torchs_exception(capfd):
    from autodbg import torch_hooks

    class BrokenDistributed:
        def is_initialized(self):
            raise RuntimeError("autodbg's part broke")

    def init_process_group(*args, **kwargs):
        raise ValueError(f"torch's own {args} {kwargs}")

    wrapper = torch_hooks._init_process_group(init_process_group, BrokenDistributed())
    with pytest.raises(ValueError, match=r"^torch's own \('gloo',\) \{'rank': 0\}$"):
        wrapper("gloo", rank=0)
    assert wrapper.__wrapped__ is init_process_group and wrapper.__name__ == "init_process_group"
    err = capfd.readouterr().err
    assert err.count("autodbg:") == 1
    assert "internal error in init_process_group: RuntimeError: autodbg's part broke" in err


def test_distributed_breakpoint_falls_back_to_torchs_debugger(monkeypatch, capfd):
    from autodbg import session, torch_hooks

    calls = []

    class TorchDebugger:  # what torch's _make_distributed_pdb() returns, as torch uses it
        def message(self, text):
            calls.append(("message", text))

        def set_trace(self, frame=None):
            calls.append(("set_trace", frame))

    def broken(frame, intro=None, in_call=False):
        raise OSError("no runtime directory")

    monkeypatch.setattr(session, "set_trace", broken)
    debugger = torch_hooks._make_distributed_pdb(TorchDebugger)()
    debugger.message("Type 'up'")
    debugger.set_trace()
    assert calls == [("message", "Type 'up'"), ("set_trace", sys._getframe())]
    err = capfd.readouterr().err
    assert err.count("autodbg:") == 1
    assert "internal error in torch.distributed.breakpoint(): OSError: no runtime directory" in err


# The torch behaviour autodbg relies on (see autodbg/torch_hooks.py and autodbg/launcher.py):
# if an upgrade changes one, its test fails here first.


def test_torch_wraps_excepthook_in_init_process_group():
    from torch.distributed import distributed_c10d

    source = inspect.getsource(distributed_c10d._new_process_group_helper) + inspect.getsource(
        distributed_c10d.init_process_group
    )
    assert (
        "def _distributed_excepthook" in source
        and "sys.excepthook = _distributed_excepthook" in source
    )


def test_torch_breakpoint_uses_make_distributed_pdb():
    import torch.distributed as dist

    source = inspect.getsource(dist.breakpoint)
    assert (
        "_make_distributed_pdb()" in source and ".set_trace()" in source and "barrier()" in source
    )


def test_init_process_group_takes_timeout():
    from torch.distributed import distributed_c10d

    assert "timeout" in inspect.signature(distributed_c10d.init_process_group).parameters


def test_every_group_defaults_its_timeout_through_one_function():
    # autodbg replaces distributed_c10d._get_default_timeout and _check_valid_timeout, which these
    # look up at call time; DeviceMesh reaches them through its own imports of the same functions.
    from torch.distributed import device_mesh, distributed_c10d

    defaulting = "if timeout is None:\n        timeout = _get_default_timeout("
    for function in ("init_process_group", "_new_group_with_tag", "split_group"):
        source = inspect.getsource(getattr(distributed_c10d, function))
        assert defaulting in source and "_check_valid_timeout(timeout)" in source, function
    assert "_new_group_with_tag(" in inspect.getsource(distributed_c10d.new_group)
    assert list(inspect.signature(distributed_c10d._check_valid_timeout).parameters) == ["timeout"]
    for name in ("init_process_group", "new_group", "split_group"):
        assert getattr(device_mesh, name) is getattr(distributed_c10d, name)
    mesh_groups = inspect.getsource(device_mesh.DeviceMesh._init_one_process_group)
    assert "new_group(" in mesh_groups and "split_group(" in mesh_groups
    assert "init_process_group()" in inspect.getsource(
        device_mesh.DeviceMesh._setup_world_group_and_device
    )


def test_elastic_launcher_closes_workers_through_pcontext_close():
    from torch.distributed.elastic.agent.server import local_elastic_agent
    from torch.distributed.elastic.multiprocessing import api

    assert list(inspect.signature(api.PContext.close).parameters) == [
        "self",
        "death_sig",
        "timeout",
    ]
    assert "self.close()" in inspect.getsource(api.SubprocessContext._poll)  # a worker failed
    assert "self._pcontext.close(death_sig, timeout)" in inspect.getsource(
        local_elastic_agent.LocalElasticAgent._shutdown
    )
    assert "_start_workers" in vars(local_elastic_agent.LocalElasticAgent)


def test_elastic_launcher_signal_handler_and_worker_sessions():
    from torch.distributed.elastic.multiprocessing import api
    from torch.distributed.elastic.multiprocessing.subprocess_handler import subprocess_handler

    assert "signal.signal(sig, _terminate_process_handler)" in inspect.getsource(api.PContext.start)
    assert 'kwargs["start_new_session"] = True' in inspect.getsource(subprocess_handler)
