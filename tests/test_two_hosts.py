"""Two hosts that share nothing but the network: a c10d torchrun job across them, debugged from one.

Each host is a set of namespaces (tests/hosts.py): network (a veth pair to each other host),
hostname, mount (its own /etc/hosts, /root, /tmp and so the default runtime directory
/tmp/autodbg-0, /run), PID and IPC. Node 0 of the job runs on host 0, node 1 on host 1;
torch's c10d rendezvous sorts the nodes by host name (``_NodeDesc`` order, in
``torch/distributed/elastic/rendezvous/dynamic_rendezvous.py``), so host 0 (the lower name)
gets ranks 0-1 and host 1 ranks 2-3. Rank 3 fails; the others block in ``all_reduce``.
Every CLI here runs on host 0 with no flag and no ``MASTER_*`` variable.

One job per class (its start-up is most of the time), its tests in order: the last one
quits rank 3's session and sees the job end on both hosts.
"""

import json
import os
import re
import secrets
import sys
import types

import hosts
import pexpect
import pytest
from conftest import assert_no_autodbg_failure
from harness import BIN, Proc, plain, target, wait_until

pytest.importorskip("torch")
TORCHRUN = os.path.join(BIN, "torchrun")
AUTODBG = os.path.join(BIN, "autodbg")
PORT = 29400  # the rendezvous endpoint's port: free, in namespaces of the test's own
KEY_FILE = "/root/.config/autodbg/job-key"  # in each host's own /root
JOB_MARKS = [pytest.mark.torch, pytest.mark.slow, pytest.mark.timeout(300)]


def made_hosts(count):
    """:func:`hosts.hosts`, or a skip saying why simulated hosts cannot be made here."""
    reason = hosts.unavailable()
    if reason:
        pytest.skip(reason)
    return hosts.hosts(count)


@pytest.fixture
def cluster():
    """Two simulated hosts, removed after the test."""
    with made_hosts(2) as made:
        yield made


def start_job(cluster, **settings):
    """Start node 0 on host 0 and node 1 on host 1 (stdout a pipe: the ranks' sessions are sockets)."""
    env = hosts.environment(AUTODBG="1", AUTODBG_WAIT="300", **settings)
    nodes = []
    for host in cluster[:2]:
        argv = [
            TORCHRUN,
            "--nnodes=2",
            "--nproc-per-node=2",
            "--rdzv-backend=c10d",
            f"--rdzv-endpoint={cluster[0].name}:{PORT}",
            "--max-restarts=0",
            target("two_hosts_job.py"),
        ]
        nodes.append(Proc(host.argv(argv), env))
    return nodes


def stop_job(nodes):
    for node in nodes:
        node.kill()
    for node in nodes:
        assert_no_autodbg_failure(node.output, node.argv)


def autodbg(host, args, env, timeout=60):
    """Run the CLI on ``host``; return its CompletedProcess."""
    return host.run([AUTODBG, *args], env, timeout=timeout)


def listing(host, env, args=()):
    """``autodbg ls --json`` on ``host``: its records (an AssertionError says why it failed)."""
    done = autodbg(host, ["ls", "--json", *args], env)
    assert done.returncode == 0, f"autodbg ls on {host.name}: {done.stdout}{done.stderr}"
    return json.loads(done.stdout)


def wait_for_session(host, env, rank, timeout=200):
    """Wait until ``host`` lists the session of ``rank`` waiting for a client; return its record."""

    def find():
        for record in listing(host, env):
            if record.get("rank") == rank and record.get("state") == "waiting":
                return record
        return None

    return wait_until(find, timeout, f"rank {rank}'s session on {host.name}")


def attach_on(spawn, host, env, args):
    """``autodbg attach ARGS`` on ``host``, on a real pty."""
    argv = host.argv([AUTODBG, "attach", *args])
    return spawn(argv[0], env, timeout=60, args=argv[1:])


def in_rank_3(cli, job):
    """At rank 3's prompt: its failing frame's locals, on host 1."""
    cli.expect("ipdb>")
    cli.sendline("p (rank, scale * 6)")
    cli.expect(r"\(3, 42\)")
    cli.sendline("p __import__('socket').gethostname()")
    cli.expect(re.escape(repr(job.h1.name)))
    assert "return batch[index] * scale * rank" in plain(cli.logfile_read.getvalue())


def quit_and_end(cli, job):
    """Quit rank 3's session: rank 3 ends, and with it the job (status not 0) on both hosts."""
    cli.sendline("q")
    cli.expect(pexpect.EOF)
    for node in job.nodes:
        assert node.wait(120) != 0


def one_line(done):
    """Assert ``done`` failed with exit status 1 and one ``autodbg:`` line; return the line."""
    lines = (done.stdout + done.stderr).strip().splitlines()
    assert done.returncode == 1 and len(lines) == 1 and lines[0].startswith("autodbg: "), (
        done.returncode,
        done.stdout,
        done.stderr,
    )
    return lines[0]


def write_key(host, key):
    """Write ``key`` to ``host``'s KEY_FILE, 0600 in a 0700 folder, as ``autodbg.keys`` wants."""
    path = host.file(KEY_FILE)
    os.makedirs(os.path.dirname(path), 0o700, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(key + "\n")


@pytest.mark.timeout(60)
def test_hosts_share_nothing_but_the_network(cluster):
    """The infrastructure, with plain commands: names, files, pids and ssh as on two machines."""
    env = hosts.environment()
    h0, h1 = cluster
    assert [h.run(["hostname"], env).stdout.strip() for h in cluster] == [h.name for h in cluster]
    with open(h0.file("/tmp/mine"), "w") as out:
        out.write("host 0\n")
    assert h0.run(["cat", "/tmp/mine"], env).returncode == 0
    assert h1.run(["cat", "/tmp/mine"], env).returncode != 0
    pid = h0.run(["sh", "-c", "sleep 60 >/dev/null 2>&1 & echo $!"], env).stdout.strip()
    assert h1.run(["kill", "-0", pid], env).returncode != 0  # host 0's pids mean nothing here
    assert h0.run(["getent", "hosts", h1.name], env).stdout.split() == [h1.address, h1.name]
    with hosts.sshd(h1, [h0]) as daemon:
        done = h0.run(
            [
                "ssh",
                "-o",
                "BatchMode=yes",
                h1.name,
                "hostname; echo $PATH; echo ${XDG_RUNTIME_DIR-}",
            ],
            env,
            timeout=30,
        )
        assert done.returncode == 0, done.stderr + daemon.output
        name, path, runtime = done.stdout.splitlines()
        assert name == h1.name and runtime == ""
        assert BIN not in path.split(":")  # the remote login's PATH has no venv
        assert os.path.exists(h0.file("/root/.ssh/id_ed25519"))
        assert h1.run(["test", "-e", "/root/.ssh/id_ed25519"], env).returncode == 1
    gone = h0.run(["ssh", "-o", "BatchMode=yes", h1.name, "true"], env, timeout=30)
    assert gone.returncode == 255  # sshd went with its context


@pytest.fixture(scope="class")
def ssh_job():
    """The job with sshd on host 1, host 0's root holding a key for it."""
    with made_hosts(2) as (h0, h1), hosts.sshd(h1, [h0]) as daemon:
        nodes = start_job([h0, h1])
        try:
            env = hosts.environment()
            wait_for_session(h1, env, 3)
            yield types.SimpleNamespace(h0=h0, h1=h1, env=env, nodes=nodes, sshd=daemon)
        finally:
            stop_job(nodes)


@pytest.fixture(scope="class")
def tcp_job():
    """The job in TCP mode; host 2 outside it, with a key of its own."""
    with made_hosts(3) as (h0, h1, outsider):
        key = secrets.token_hex(32)
        write_key(h0, key)
        write_key(h1, key)
        write_key(outsider, secrets.token_hex(32))
        nodes = start_job([h0, h1], AUTODBG_LISTEN="0.0.0.0", AUTODBG_KEY_FILE=KEY_FILE)
        try:
            # A remote command that fails, and no sshd: only TCP can reach rank 3.
            env = hosts.environment(AUTODBG_KEY_FILE=KEY_FILE, AUTODBG_REMOTE="false {host}")
            wait_for_session(h1, env, 3)
            yield types.SimpleNamespace(
                h0=h0, h1=h1, outsider=outsider, env=env, nodes=nodes, key=key
            )
        finally:
            stop_job(nodes)


class TestThroughSsh:
    """The default transport: sshd on host 1, host 0's root has a key for it; no TCP port."""

    pytestmark = JOB_MARKS

    @pytest.fixture
    def job(self, ssh_job):
        return ssh_job

    def test_ls_lists_rank_3_with_its_host(self, job):
        records = listing(job.h0, job.env)
        assert [(r["rank"], r["host"]) for r in records] == [(3, job.h1.name)], records
        assert "token" not in json.dumps(records)
        assert not records[0].get("tcp")  # the default mode listens on no TCP port
        shown = autodbg(job.h0, ["ls"], job.env)
        assert shown.returncode == 0, shown.stderr
        rows = [line for line in shown.stdout.splitlines() if " 3/4 " in line]
        assert len(rows) == 1 and job.h1.name in rows[0] and "IndexError" in rows[0], shown.stdout

    def test_stack_all_groups_the_four_ranks(self, job):
        stack = autodbg(job.h0, ["stack", "--all", "--json"], job.env, timeout=90)
        assert stack.returncode == 0, stack.stdout + stack.stderr
        where = {r["rank"]: r["host"] for r in json.loads(stack.stdout)}
        assert where == {0: job.h0.name, 1: job.h0.name, 2: job.h1.name, 3: job.h1.name}
        stack = autodbg(job.h0, ["stack", "--all"], job.env, timeout=90)
        assert stack.returncode == 0, stack.stdout + stack.stderr
        assert re.search(r"\branks 0,1,2\b", stack.stdout), stack.stdout  # all in all_reduce
        assert re.search(r"\brank 3\b", stack.stdout), stack.stdout
        assert job.h0.name in stack.stdout and job.h1.name in stack.stdout, stack.stdout

    def test_cast_all_answers_from_the_four_ranks(self, job):
        cast = autodbg(job.h0, ["cast", "all", "p rank", "--json"], job.env, timeout=90)
        assert cast.returncode == 0, cast.stdout + cast.stderr
        answers = [
            (r["rank"], r["host"], r["answer"], (r["frame"] or {}).get("function"))
            for r in json.loads(cast.stdout)
        ]
        h0, h1 = job.h0.name, job.h1.name
        # The blocked ranks answer in main(), where they wait; rank 3 in its session's frame.
        assert answers == [
            (0, h0, "0", "main"),
            (1, h0, "1", "main"),
            (2, h1, "2", "main"),
            (3, h1, "3", "step"),
        ], cast.stdout
        cast = autodbg(job.h0, ["cast", "all", "p rank"], job.env, timeout=90)
        assert cast.returncode == 0, cast.stdout + cast.stderr
        for rank in range(4):
            assert re.search(rf"\brank {rank}\b", cast.stdout), cast.stdout

    def test_attach_with_commands_through_ssh(self, job):
        done = autodbg(job.h0, ["attach", "3", "-c", "p scale * 6"], job.env)
        assert done.returncode == 0 and "42" in done.stdout, done.stdout + done.stderr
        wait_for_session(job.h1, job.env, 3, timeout=30)  # detached: the session stays

    def test_the_dashboard_reaches_rank_3_through_ssh(self, job):
        # `autodbg web` on host 0; its page (a client on host 0 too: the test's own network
        # namespace reaches neither host's loopback) opens rank 3's console on host 1.
        web = Proc(job.h0.argv([AUTODBG, "web"]), job.env)
        try:
            web.wait_for("?token=", timeout=60)
            url = re.search(r"open (http://\S+\?token=\S+)", web.output).group(1)
            page = job.h0.run(
                [sys.executable, target("dashboard_client.py"), url, "3", "p scale * 6", "42"],
                job.env,
                timeout=150,
            )
            assert page.returncode == 0, page.stdout + page.stderr
            seen = json.loads(page.stdout)
            assert [(s["rank"], s["host"]) for s in seen["sessions"]] == [(3, job.h1.name)]
            assert "42" in seen["console"], seen["console"]
            assert job.h1.name in seen["stacks"] and job.h0.name in seen["stacks"], seen
            for rank in range(4):
                assert re.search(rf"\brank {rank}\b", seen["cast"]), seen["cast"]
        finally:
            web.kill()
        assert_no_autodbg_failure(web.output, web.argv)
        wait_for_session(job.h1, job.env, 3, timeout=30)  # the console detached: the session stays

    def test_attach_on_a_terminal_through_ssh(self, job, spawn):
        cli = attach_on(spawn, job.h0, job.env, ["3"])
        in_rank_3(cli, job)
        # sshd logged the attach: a login from host 0 with a terminal (ssh -t).
        job.sshd.wait_for(f"Accepted publickey for root from {job.h0.address}", timeout=10)
        job.sshd.wait_for("Starting session: command on pts/", timeout=10)
        quit_and_end(cli, job)


class TestOverTcp:
    """The opt-in TCP mode: no sshd at all, a key file shared by the job's two hosts.

    Host 2 is outside the job, with a key of its own.
    """

    pytestmark = JOB_MARKS

    @pytest.fixture
    def job(self, tcp_job):
        return tcp_job

    def test_ls_publishes_a_reachable_address_and_no_secret(self, job):
        records = listing(job.h0, job.env)
        assert [(r["rank"], r["host"]) for r in records] == [(3, job.h1.name)], records
        host, _, port = (records[0].get("tcp") or "").rpartition(":")
        assert port.isdigit() and host in (job.h1.address, job.h1.name), records  # not loopback
        assert job.key not in json.dumps(records) and "token" not in json.dumps(records)

    def test_a_client_without_the_key_is_refused(self, job):
        store = ["--store", f"{job.h0.name}:{PORT}"]  # the rendezvous endpoint
        other_key = autodbg(job.outsider, ["attach", "3", *store, "-c", "p rank"], job.env)
        assert "refused" in one_line(other_key), other_key.stderr
        os.unlink(job.outsider.file(KEY_FILE))
        one_line(autodbg(job.outsider, ["attach", "3", *store, "-c", "p rank"], job.env))
        wait_for_session(job.h1, job.env, 3, timeout=30)

    def test_attach_with_the_key(self, job, spawn):
        cli = attach_on(spawn, job.h0, job.env, ["3"])
        in_rank_3(cli, job)
        quit_and_end(cli, job)


@pytest.mark.torch
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_dap_session_on_the_other_host_is_listed_with_how_to_reach_it(cluster):
    # AUTODBG_MODE=dap: no socket, but the record (its address) is in the job's store.
    pytest.importorskip("debugpy")
    h0, h1 = cluster
    nodes = start_job(cluster, AUTODBG_MODE="dap")
    try:
        env = hosts.environment()
        record = wait_for_session(h0, env, 3)
        assert record["host"] == h1.name and record["dap"].startswith("127.0.0.1:"), record
        port = record["dap"].rpartition(":")[2]
        line = one_line(autodbg(h0, ["attach", "3"], env))
        assert f"ssh -L {port}:127.0.0.1:{port} {h1.name}" in line, line
    finally:
        stop_job(nodes)
