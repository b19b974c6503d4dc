"""Finding a job's store and nodes (autodbg.discovery) and reaching them (autodbg.transport), on one host.

Two nodes of one job are simulated on this host with a runtime directory each;
"another host" is reached through a stand-in for ``ssh`` that, like sshd, hands
the command string to a shell with a login's PATH (no venv) and a clean
environment. The two-host test with network namespaces and a real sshd is
elsewhere.
"""

import json
import os
import shlex
import socket
import subprocess
import sys

import pytest
from harness import BIN, records, target, wait_for_record, wait_until

from autodbg import transport

TORCHRUN = os.path.join(BIN, "torchrun")
AUTODBG = os.path.join(BIN, "autodbg")

FAKE_SSH = """#!/bin/sh
# ssh on one host: drop ssh's options, note the host, run the command string in a shell as sshd does,
# in a login's environment: no venv on PATH, no AUTODBG_*, no MASTER_*.
while [ $# -gt 0 ]; do
  case "$1" in
    -o) shift 2 ;;
    -t|-T) shift ;;
    *) break ;;
  esac
done
echo "$1" >> "$(dirname "$0")/hosts.log"
exec env -i HOME="$HOME" PATH=/usr/bin:/bin sh -c "$2"
"""


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def shell_env(env, runtime_dir, **more):
    """A user's shell on a node: its runtime directory, no MASTER_* nor AUTODBG=1."""
    clean = {k: v for k, v in env.items() if not k.startswith(("MASTER_", "AUTODBG"))}
    return dict(clean, AUTODBG_DIR=runtime_dir, **more)


def cli(args, env, timeout=60):
    return subprocess.run(
        [AUTODBG, *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def fake_ssh(tmp_path):
    path = tmp_path / "ssh"
    path.write_text(FAKE_SSH)
    path.chmod(0o755)
    return path


# -- transport: pure logic beside the end-to-end tests below --------------------------------


@pytest.fixture
def remote(monkeypatch):
    """Set the AUTODBG_REMOTE template that transport sees."""

    class Settings:
        remote = "ssh {host}"

    monkeypatch.setattr(transport.config, "current", lambda: Settings)

    def set_template(template):
        Settings.remote = template

    return set_template


def test_command_quotes_for_ssh_and_passes_argv_to_others(remote, monkeypatch):
    argv = [
        "env",
        "AUTODBG_DIR=/run/a b",
        "/venv/bin/python",
        "-m",
        "autodbg",
        "attach",
        "-c",
        "p x",
    ]
    remote("ssh {host}")
    line = transport.command("node1", argv)
    assert line == ["ssh", "-o", "BatchMode=yes", "node1", shlex.join(argv)]
    assert shlex.split(line[-1]) == argv  # what the remote shell splits it back into
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True)
    assert transport.command("node1", argv, interactive=True)[:3] == ["ssh", "-t", "node1"]
    monkeypatch.setattr(sys.stdin, "isatty", lambda: False)
    assert transport.command("node1", argv, interactive=True)[:2] == ["ssh", "node1"]
    remote("/usr/bin/ssh -p 2222 {host}")
    assert transport.command("n2", ["a"])[:5] == [
        "/usr/bin/ssh",
        "-o",
        "BatchMode=yes",
        "-p",
        "2222",
    ]
    remote("srun --jobid=42 --overlap -w {host} --pty")
    assert transport.command("n3", argv, interactive=True) == [
        "srun",
        "--jobid=42",
        "--overlap",
        "-w",
        "n3",
        "--pty",
        *argv,
    ]
    remote("kubectl exec -i -t {host} --")
    assert transport.command("pod-1", ["a b"]) == [
        "kubectl",
        "exec",
        "-i",
        "-t",
        "pod-1",
        "--",
        "a b",
    ]
    node = {"host": "n", "python": "/opt/py/bin/python3", "dir": "/run/user/1/autodbg"}
    assert transport.autodbg_argv(node, ["ls"]) == [
        "env",
        "AUTODBG_DIR=/run/user/1/autodbg",
        "/opt/py/bin/python3",
        "-m",
        "autodbg",
        "ls",
    ]
    assert transport.autodbg_argv({"host": "n"}, ["ls"]) == [sys.executable, "-m", "autodbg", "ls"]


def test_transport_runs_for_real_and_says_why_a_node_fails(remote, tmp_path):
    remote(f"{fake_ssh(tmp_path)} {{host}}")
    here = {"host": "node-a", "python": sys.executable, "dir": str(tmp_path)}
    broken = {"host": "node-b", "python": "/nonexistent/python"}
    answers = transport.run_on([here, broken], ["--version"], 30)
    assert answers["node-a"].returncode == 0 and answers["node-a"].stdout.startswith("autodbg ")
    assert isinstance(answers["node-b"], transport.TransportError)
    assert "is autodbg installed there?" in str(answers["node-b"])
    assert set((tmp_path / "hosts.log").read_text().split()) == {"node-a", "node-b"}
    bare = tmp_path / "python"  # a node's Python without autodbg, as such a Python answers
    bare.write_text(f"#!/bin/sh\necho '{bare}: No module named autodbg' >&2\nexit 1\n")
    bare.chmod(0o755)
    with pytest.raises(transport.TransportError, match=f"autodbg is not installed for {bare} on n"):
        transport.run({"host": "n", "python": str(bare)}, ["--version"], 30)
    remote("/nonexistent/ssh {host}")
    with pytest.raises(
        transport.TransportError, match="/nonexistent/ssh not found: set AUTODBG_REMOTE"
    ):
        transport.run(here, ["--version"], 10)
    remote("ssh -o ConnectTimeout=5 {host}")
    with pytest.raises(
        transport.TransportError, match="cannot reach no-such-host.invalid through ssh"
    ):
        transport.run({"host": "no-such-host.invalid"}, ["--version"], 30)
    remote("env NODE={host} sh -c 'exit 3' --")
    assert transport.attach(here, ["--version"]) == 3  # the remote status passes through


def test_a_group_across_hosts_names_them():
    from autodbg import stacks

    here = os.uname().nodename
    members = [
        {"rank": 2, "pid": 21, "host": "node1"},
        {"rank": 0, "pid": 11, "host": here},
        {"rank": 3, "pid": 22, "host": "node1"},
    ]
    assert stacks.who(members) == f"ranks 0,2,3 (pids 11 on {here}; 21, 22 on node1)"
    assert stacks.who(members[1:2]) == "rank 0 (pid 11)"


# -- real jobs ------------------------------------------------------------------------------


@pytest.mark.torch
@pytest.mark.slow
@pytest.mark.timeout(240)
def test_c10d_rendezvous_endpoint_leads_to_the_workers_store(env, runtime_dir, start, tmp_path):
    """Two nodes (one directory each) of a c10d-rendezvous job; node 0's shell knows nothing."""
    pytest.importorskip("torch")
    endpoint = f"127.0.0.1:{free_port()}"
    env["CRASH_RANKS"] = "3"
    dirs = []
    for node in (0, 1):
        dirs.append(f"{runtime_dir}/n{node}")
        os.mkdir(dirs[-1], 0o700)
        argv = [
            TORCHRUN,
            "--nnodes=2",
            "--nproc-per-node=2",
            "--rdzv-backend=c10d",
            f"--rdzv-endpoint={endpoint}",
            target("ddp_crash.py"),
        ]
        start(argv, dict(env, AUTODBG_DIR=dirs[-1]))

    def crashed():
        # Each node's `ls` lists the other's sessions too (the store): the socket says whose it is.
        for r in records(dirs[0]):
            if r["rank"] == 3 and r["state"] == "waiting" and r["socket"]:
                there = os.path.dirname(os.path.dirname(r["socket"]))
                return dirs[1] if there == dirs[0] else dirs[0], r
        return None

    # The rendezvous picks the nodes' ranks: rank 3 is on either; the other node is "here".
    mine, session = wait_until(crashed, 150, "rank 3's session")

    # A shell outside the job: the endpoint is all it knows, and it is not the workers' store.
    outside = shell_env(env, f"{runtime_dir}/outside")
    os.mkdir(outside["AUTODBG_DIR"], 0o700)
    listed = wait_until(
        lambda: json.loads(cli(["ls", "--json", "--store", endpoint], outside).stdout),
        60,
        "rank 3 in the store the endpoint names",
    )
    assert [(r["rank"], r["pid"]) for r in listed] == [(3, session["pid"])]
    assert "tcp" not in listed[0] or listed[0]["tcp"] is None
    job_files = [
        os.path.join(folder, name)
        for folder, _, names in os.walk(mine)
        for name in names
        if name.startswith("node.")
    ]

    def listing_nodes():  # once both nodes registered, the record lists them (no store for the CLI)
        with open(job_files[0]) as source:
            found = json.load(source)
        return found if len(found.get("nodes") or ()) == 2 else None

    record = wait_until(listing_nodes, 30, "the job record listing both nodes")
    assert sorted(node["dir"] for node in record["nodes"]) == sorted(dirs)
    assert record["rendezvous"] == endpoint and record["store"] != endpoint
    assert record["nnodes"] == 2 and record["node_rank"] in (0, 1)
    assert record["ranks"] == [0, 1] if record["node_rank"] == 0 else [2, 3]
    assert record["python"] == sys.executable and record["dir"] == mine

    # Node 0's shell: no flag, no MASTER_*; the job record leads to the store, the stand-in ssh to node 1.
    ssh = fake_ssh(tmp_path)
    node0 = shell_env(env, mine, AUTODBG_REMOTE=f"{ssh} {{host}}")
    listing = cli(["ls"], node0)
    assert listing.returncode == 0, listing.stderr
    assert "IndexError: list index out of range" in listing.stdout and " 3/4 " in listing.stdout

    attached = cli(["attach", "3", "-c", "p scale * 6"], node0)
    assert attached.returncode == 0, attached.stderr
    assert "42" in attached.stdout
    assert (tmp_path / "hosts.log").read_text().split() == [os.uname().nodename]

    stacks = cli(["stack", "--all", "--json", "--timeout", "5"], node0)
    assert stacks.returncode == 0, stacks.stderr
    ranks = sorted(r["rank"] for r in json.loads(stacks.stdout) if r.get("role") is None)
    assert ranks == [0, 1, 2, 3]
    text = cli(["stack", "--all"], node0)
    assert "ranks 0,1,2" in text.stdout and "rank 3" in text.stdout, text.stdout
    one = cli(["stack", "3", "--json"], node0)  # a rank of the other node, by rank
    assert [r["rank"] for r in json.loads(one.stdout)] == [3], one.stderr

    # A node that cannot be reached: named in one line with why, status 1, this node's ranks still shown.
    cut = dict(node0, AUTODBG_REMOTE="/nonexistent/ssh {host}")
    partial = cli(["stack", "--all", "--json"], cut)
    assert partial.returncode == 1
    assert sorted(r["rank"] for r in json.loads(partial.stdout) if r.get("role") is None) in (
        [0, 1],
        [2, 3],
    )
    assert partial.stderr.count("autodbg: node ") == 1
    assert "/nonexistent/ssh not found" in partial.stderr


@pytest.mark.torch
@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize("init_method", ["env://", "tcp://"])
def test_a_job_without_torchrun_is_listed_through_its_default_store(
    env, runtime_dir, start, init_method
):
    """Ranks started as srun or mpirun would (no torchrun): their default process group's store."""
    pytest.importorskip("torch")
    port = free_port()
    ranks = {k: v for k, v in env.items() if not k.startswith(("MASTER_", "SLURM_"))}
    for rank in (0, 1):
        if init_method == "env://":  # mpirun-style: the program's own RANK, MASTER_*
            given = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
            given.update(RANK=str(rank), WORLD_SIZE="2")
        else:  # srun's variables, and the store's address in the program's init_method
            given = {"SLURM_PROCID": str(rank), "SLURM_LOCALID": str(rank), "SLURM_NTASKS": "2"}
            given.update(SLURM_JOB_ID="4242", INIT_METHOD=f"tcp://127.0.0.1:{port}")
        start([sys.executable, target("launcherless_crash.py")], dict(ranks, **given))
    wait_for_record(runtime_dir, timeout=90, rank=1, state="waiting")
    outside = shell_env(env, f"{runtime_dir}/outside")
    os.mkdir(outside["AUTODBG_DIR"], 0o700)
    listed = wait_until(
        lambda: json.loads(cli(["ls", "--json", "--store", f"127.0.0.1:{port}"], outside).stdout),
        60,
        "rank 1 in the default group's store",
    )
    assert [r["rank"] for r in listed] == [1]
    # Local rank 0 of the host wrote the job record: the store, found with no flag.
    found = []
    for folder, _, names in os.walk(runtime_dir):
        for name in names:
            if name.startswith("node."):
                with open(os.path.join(folder, name)) as source:
                    found.append(json.load(source))
    assert [r["store"].rpartition(":")[2] for r in found] == [str(port)]
    here = shell_env(env, runtime_dir)
    assert [r["rank"] for r in json.loads(cli(["ls", "--json"], here).stdout)] == [1]
