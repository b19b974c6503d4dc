"""The terminal that a job's ranks share: whose debugger it is, and nothing over its prompt.

Each console session of a rank says once whose debugger the terminal is now
(also when it passes from one rank to the next), the prompt names the rank,
and the launcher's announcements never land between a prompt and the command
typed at it: while a worker's debugger has the terminal, that session names
the job's other waiting sessions itself, before it draws its next prompt.
"""

import os
import re

import pexpect
import pytest
from conftest import PYTHON
from harness import BIN, plain, records, target, wait_for_record, wait_until

TORCHRUN = os.path.join(BIN, "torchrun")
HEADER = (
    r"autodbg: \[rank (\d)\] IndexError: list index out of range at (\S+):10 in step; "
    r"(this terminal is|the terminal is free: it is) rank (\d)'s debugger now"
)
COMMAND = "p int(os.environ['RANK']) * 1000 + scale * 111"  # its echo cannot match the answer


@pytest.mark.torch
@pytest.mark.slow
@pytest.mark.timeout(240)
def test_four_failing_ranks_take_the_terminal_in_turn(env, runtime_dir, spawn):
    pytest.importorskip("torch")
    env["CRASH_RANKS"] = "0,1,2,3"  # all at once, in the same step
    command = [TORCHRUN, "--standalone", "--nproc_per_node=4", target("ddp_crash.py")]
    job = spawn(" ".join(command), env, timeout=120)
    owners = []
    for turn in range(4):
        job.expect(HEADER)
        rank, path, how, named = job.match.groups()
        # The file as the working directory (the test's, inherited) names it.
        assert (rank, os.path.abspath(path)) == (named, target("ddp_crash.py"))
        assert how == ("this terminal is" if turn == 0 else "the terminal is free: it is")
        owners.append(int(rank))
        job.expect_exact(f"[rank {rank}] ipdb>")
        if turn == 0:  # the others are waiting: the next prompt names those the first did not
            wait_until(
                lambda: sum(r["state"] == "waiting" for r in records(runtime_dir)) == 3,
                60,
                "3 sessions waiting for the terminal",
            )
        job.sendline(COMMAND)
        job.expect(str(int(rank) * 1000 + 777))
        job.expect_exact(f"[rank {rank}] ipdb>")
        job.sendline("q")
    job.expect(pexpect.EOF, timeout=60)
    assert sorted(owners) == [0, 1, 2, 3]

    transcript = plain(job.logfile_read.getvalue())
    # Between each prompt and the command typed at it: nothing but the command's echo
    # (prompt_toolkit redraws the prompt line as the command comes: part of it, then the
    # prompt again).
    for after_prompt in transcript.split("ipdb>")[1:]:
        typed = re.sub(r"\[rank \d\]$", "", after_prompt.split("\n", 1)[0].strip(" \r")).strip()
        assert COMMAND.startswith(typed) or typed == "q", f"{typed!r} after a prompt"
    # Each session named the sessions still open, in a line before a prompt.
    sessions = re.split(HEADER, transcript)[1:]
    for turn in range(4):
        text = sessions[turn * 5 + 4]  # re.split: each header's 4 groups, then the session's text
        named = {
            int(n)
            for line in re.findall(r"autodbg: (.*) in (?:a )?debugger sessions? too", text)
            for n in re.findall(r"rank (\d)", line)
        }
        assert named == set(owners[turn + 1 :]), text


def test_a_rank_names_itself_in_the_prompt_and_on_the_terminal(env, runtime_dir, spawn, start):
    env.update(RANK="1", WORLD_SIZE="2", AUTODBG_DEBUGGER="pdb")
    console = spawn(f"{PYTHON} {target('nested_breakpoint.py')}", env)
    console.expect(
        r"autodbg: \[rank 1\] ValueError: boom 7 at (\S+):12 in main; "
        r"this terminal is rank 1's debugger now"
    )
    assert os.path.abspath(console.match.group(1)) == target("nested_breakpoint.py")
    console.expect_exact("[rank 1] (Pdb) ")
    console.sendline("p helper()")
    console.expect_exact("([rank 1] (Pdb)) ")  # the nested prompt, as pdb's `debug` makes it
    console.sendline("c")
    console.expect("43")
    console.expect_exact("[rank 1] (Pdb) ")
    console.sendline("q")
    console.expect(pexpect.EOF)
    assert console.logfile_read.getvalue().count("this terminal is") == 1

    # A socket client's prompt names the rank too; no header (the terminal is not the session's).
    proc = start([PYTHON, target("nested_breakpoint.py")], env)
    record = wait_for_record(runtime_dir, pid=proc.pid, state="waiting")
    client = spawn(f"nc -U {record['socket']}", env)
    client.expect_exact("[rank 1] (Pdb) ")
    client.sendline("q")
    client.expect(pexpect.EOF)
    assert proc.wait(30) == 1
    assert "debugger now" not in proc.output + client.logfile_read.getvalue()
