"""Two simulated nodes on this machine: node 0's CLI finds node 1's rank only through the job's store.

Each node has its own runtime directory, so node 0's CLI may not use node 1's
socket: it reaches the session in the TCP mode, with the key file both share.
The job's store is on a loopback address, so every node is on this host and
a loopback listener is one they all reach.
"""

import os
import socket
import subprocess

import pexpect
import pytest
from harness import BIN, files_under, target, wait_for_record

pytest.importorskip("torch")
pytestmark = [pytest.mark.torch, pytest.mark.slow, pytest.mark.timeout(240)]
TORCHRUN = os.path.join(BIN, "torchrun")
AUTODBG = os.path.join(BIN, "autodbg")


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_rank_of_another_node_through_the_store(env, runtime_dir, start, spawn, tmp_path):
    port = free_port()
    env["CRASH_RANKS"] = "3"
    nodes = []
    for node in (0, 1):
        node_env = dict(
            env,
            AUTODBG_DIR=f"{runtime_dir}/n{node}",
            AUTODBG_LISTEN="127.0.0.1",
            AUTODBG_KEY_FILE=str(tmp_path / "keys" / "key"),
        )
        os.mkdir(node_env["AUTODBG_DIR"], 0o700)
        argv = [
            TORCHRUN,
            "--nnodes=2",
            f"--node-rank={node}",
            "--nproc-per-node=2",
            "--master-addr=127.0.0.1",
            f"--master-port={port}",
            target("ddp_crash.py"),
        ]
        nodes.append((start(argv, node_env), node_env))
    remote = wait_for_record(nodes[1][1]["AUTODBG_DIR"], timeout=150, rank=3, state="waiting")
    assert remote["tcp"].startswith("127.0.0.1:") and "token" not in remote

    # Node 0's environment: its own runtime directory has no session, the store has rank 3.
    here = dict(nodes[0][1], MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    assert files_under(here["AUTODBG_DIR"], lambda name: name.endswith(".sock")) == []
    listing = subprocess.run(
        [AUTODBG, "ls", "--json"], env=here, capture_output=True, text=True, timeout=60
    )
    assert listing.returncode == 0, listing.stderr
    assert [r["rank"] for r in __import__("json").loads(listing.stdout)] == [3]
    explicit = subprocess.run(
        [AUTODBG, "ls", "--store", f"127.0.0.1:{port}"],
        env=nodes[0][1],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "IndexError: list index out of range" in explicit.stdout

    # A client that does not speak the protocol is refused.
    host, _, tcp_port = remote["tcp"].rpartition(":")
    with socket.create_connection((host, int(tcp_port)), timeout=10) as intruder:
        intruder.sendall(b"AUTODBG-TOKEN 0123456789abcdef\n")
        intruder.settimeout(10)
        assert b"autodbg: refused: not an autodbg client" in intruder.recv(4096)

    cli = spawn(f"{AUTODBG} attach 3", here)
    cli.expect("ipdb>")
    cli.sendline("p scale * 6")
    cli.expect("42")
    cli.sendline("q")
    cli.expect(pexpect.EOF)
    for proc, _ in nodes:
        assert proc.wait(60) != 0
