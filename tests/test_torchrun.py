"""Real torchrun jobs (gloo on CPU): sessions per rank, reached with the CLI, nc and a terminal."""

import os
import time

import pexpect
import psutil
import pytest
from harness import BIN, plain, records, target, wait_for_record, wait_until

pytest.importorskip("torch")
pytestmark = [pytest.mark.torch, pytest.mark.slow, pytest.mark.timeout(240)]
TORCHRUN = os.path.join(BIN, "torchrun")
AUTODBG = os.path.join(BIN, "autodbg")


def seen(child, text):
    """Read what ``child`` printed so far (without blocking) and tell whether ``text`` is in it."""
    try:
        child.read_nonblocking(65536, 0.1)
    except pexpect.TIMEOUT:
        pass
    return text in child.logfile_read.getvalue()


def torchrun(nproc, script):
    return [TORCHRUN, "--standalone", f"--nproc_per_node={nproc}", target(script)]


def test_rank_session_attach_detach_and_quit(env, runtime_dir, start, spawn):
    job = start(torchrun(3, "ddp_crash.py"), env)  # stdout is a pipe: no terminal
    record = wait_for_record(runtime_dir, timeout=120, rank=1, state="waiting")
    assert record["world_size"] == 3 and record["local_rank"] == 1
    assert record["exception"] == "IndexError: list index out of range"
    assert record["where"] == f"{target('ddp_crash.py')}:10 in step"
    assert record["job"] and record["host"] == os.uname().nodename
    job.wait_for("autodbg: rank 1 is in a debugger session: IndexError: list index out of range")
    # The traceback comes first, once, through torch's own prefixing excepthook;
    # then torchrun's process (the launcher) names the session, once.
    assert job.output.index("[rank1]: IndexError") < job.output.index("autodbg: rank 1 is in")
    assert job.output.count("autodbg attach 1") == 1

    cli = spawn(f"{AUTODBG} attach 1", env)
    cli.expect("ipdb>")
    cli.sendline("p scale")
    cli.expect("7")
    cli.sendline("up")
    cli.expect("ipdb>")
    cli.sendline("p sorted(crashing)")  # a local of the caller, main()
    cli.expect(r"\[1\]")
    assert "loss = step(batch, index)" in plain(cli.logfile_read.getvalue())
    cli.expect("ipdb>")
    cli.sendcontrol("d")
    cli.expect(pexpect.EOF)
    cli.close()
    assert cli.exitstatus == 0

    wait_for_record(runtime_dir, rank=1, state="waiting")
    # Ranks 0 and 2 wait in all_reduce: alive, under the long process-group timeout autodbg set.
    workers = [
        p
        for p in psutil.Process(job.pid).children(recursive=True)
        if "ddp_crash.py" in " ".join(p.cmdline())
    ]
    assert len(workers) == 3
    nc = spawn(f"nc -U {record['socket']}", env)
    nc.expect("ipdb> ")
    nc.sendline("p index")
    nc.expect("5")
    quit_at = time.monotonic()
    nc.sendline("q")
    nc.expect(pexpect.EOF)
    status = job.wait(30)
    assert time.monotonic() - quit_at < 10
    assert status != 0
    assert job.output.count("[rank1]: IndexError: list index out of range") == 1
    assert "ChildFailedError" in job.output  # torchrun names the failed rank as usual
    root_cause = job.output[job.output.index("Root Cause (first observed failure)") :]
    assert "rank      : 1 (local_rank: 1)" in "\n".join(root_cause.splitlines()[:6])
    # No @record in the program: autodbg wrote torchelastic's error file for it.
    assert "To enable traceback" not in root_cause, root_cause
    assert "IndexError: list index out of range" in root_cause, root_cause
    assert "return batch[index] * scale" in root_cause, root_cause
    assert "autodbg: [rank 0]" not in job.output.replace(
        "autodbg: [rank 0] RuntimeError because a peer", ""
    )
    assert records(runtime_dir) == []


def test_two_ranks_share_one_terminal(env, runtime_dir, spawn, tmp_path):
    env["CRASH_RANKS"] = "0,1"
    script = tmp_path / "job.sh"
    script.write_text(
        f"stty -a > {tmp_path}/before\n{' '.join(torchrun(2, 'ddp_crash.py'))}\nstty -a > {tmp_path}/after\n"
    )
    job = spawn(f"bash {script}", env, timeout=120)
    job.expect("ipdb>")
    owner = wait_until(
        lambda: [r for r in records(runtime_dir) if r["socket"] is None],
        30,
        "the terminal owner's record",
    )[0]
    other = wait_for_record(runtime_dir, state="waiting")
    assert {owner["rank"], other["rank"]} == {0, 1}
    # The other rank is attachable over its socket while the first owns the terminal.
    cli = spawn(f"{AUTODBG} attach {other['rank']}", env)
    cli.expect("ipdb>")
    cli.sendline(
        "p 7 * (int(os.environ['RANK']) + 100)"
    )  # the echo of the line cannot match the answer
    cli.expect(str(7 * (other["rank"] + 100)))
    cli.expect("ipdb>")  # a Ctrl-D sent before the prompt is up is eaten by the pty's cooked mode
    cli.sendcontrol("d")
    cli.expect(pexpect.EOF)

    # Every keystroke on the terminal reaches the owner: nobody else reads it.
    job.sendline("p int(os.environ['RANK']) * 1000 + scale * 111111")
    job.expect(str(owner["rank"] * 1000 + 777777))
    job.expect("ipdb>")
    # The owner's console names the waiting rank before a prompt: never over one.
    announced = f"autodbg: rank {other['rank']} is in a debugger session too: autodbg attach"
    assert announced in plain(job.logfile_read.getvalue()), announced
    job.sendline("q")

    # The owner exits; torchrun's launcher holds the job for the other rank's
    # session, which takes the terminal.
    job.expect("ipdb>")
    job.sendline("p 3 * (int(os.environ['RANK']) + 500)")
    job.expect(str(3 * (other["rank"] + 500)))
    job.expect("ipdb>")
    job.sendline("q")
    job.expect(pexpect.EOF, timeout=60)
    assert (tmp_path / "before").read_text() == (tmp_path / "after").read_text()
