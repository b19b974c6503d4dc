"""The Flight Recorder in hang reports: torch's verdict on the ranks' collectives opens hang.txt."""

import os
import subprocess

import pytest
from conftest import PYTHON
from harness import BIN, files_under, target, wait_until

TORCHRUN = os.path.join(BIN, "torchrun")
AUTODBG = os.path.join(BIN, "autodbg")


def complete(path):
    """Return the file's text once it ends with a newline and has the stacks of ranks, else ''."""
    with open(path) as source:
        text = source.read()
    return text if text.endswith("\n") and "main thread" in text else ""


@pytest.mark.torch
@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize("skip", ["sleep", "broadcast"])
def test_hang_report_opens_with_the_verdict(env, runtime_dir, start, skip):
    """3 ranks; rank 2 skips the second all_reduce (waits forever, or broadcasts first)."""
    pytest.importorskip("torch")
    env.update(AUTODBG_HANG="2", AUTODBG_PG_TIMEOUT="60")
    job = start([TORCHRUN, "--standalone", "--nproc_per_node=3", target("fr_skip.py"), skip], env)
    grouped = wait_until(lambda: files_under(runtime_dir, "hang.txt".__eq__), 60, "hang.txt")
    text = wait_until(lambda: complete(grouped[0]), 30, "hang.txt written")
    first, _, rest = text.partition("\n")
    assert first.startswith("flight recorder: all_reduce #2 of process group 0:default_pg"), text
    if skip == "sleep":
        assert first.endswith("rank 2 never entered it"), text
        assert "  entered: ranks 0,1 (input sizes [[4]]" in rest, text
        assert "fr_skip.py:19 in step" in rest.splitlines()[0], text
        assert "  missing: rank 2, now at " in rest and "fr_skip.py:" in rest, text
        assert " in elsewhere" in rest.splitlines()[1], text
    else:
        assert first.endswith("mismatched on rank 2"), text
        assert "  mismatch: rank 2 called broadcast #2 " in rest, text
        assert "'all_reduce' does not match found collective type: 'broadcast'" in rest, text
    # Then the grouped stacks, the odd one out first.
    verdict, _, stacks = rest.partition("\n\n")
    assert stacks.startswith("rank 2 (pid") and "ranks 0,1 (pids" in stacks, text
    assert ("in elsewhere" if skip == "sleep" else "in broadcast") in stacks, text
    # The same verdict on demand.
    env.pop("AUTODBG")
    done = subprocess.run(
        [AUTODBG, "stack", "--all", "--collectives", "--timeout", "5"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.stdout.startswith(first + "\n" + verdict), done.stdout + done.stderr
    job.kill()


def entry(seq, name="all_reduce", sizes=((4,),), dtype="Float"):
    """One Flight Recorder entry of the default group, as torch 2.13's gloo records it (JSON'd)."""
    return {
        "record_id": seq - 1,
        "collective_seq_id": seq,
        "p2p_seq_id": 0,
        "op_id": seq,
        "is_p2p": False,
        "process_group": ["0", "default_pg"],
        "profiling_name": f"gloo:{name}",
        "input_sizes": [list(s) for s in sizes],
        "output_sizes": [list(s) for s in sizes],
        "input_dtypes": [dtype],
        "output_dtypes": [dtype],
        "state": "scheduled",
        "time_created_ns": seq,
        "frames": [{"filename": "/job/train.py", "line": 10 + seq, "name": "step"}],
    }


def result(rank, entries, where="step"):
    """What stacks.collect and collectives.gather give for one rank."""
    frames = [{"file": "/job/train.py", "line": 3, "function": where}]
    return {
        "pid": 100 + rank,
        "rank": rank,
        "answered": True,
        "threads": [{"id": "0x1", "main": True, "frames": frames}],
        "flight_recorder": {
            "version": "2.10",
            "rank": rank,
            "buffer": "2000",
            "entries": entries,
            "pg_config": {"0": {"name": "0", "desc": "default_pg", "ranks": "[0, 1, 2]"}},
        },
    }


@pytest.mark.torch
@pytest.mark.timeout(60)
def test_verdict_names_a_size_mismatch():
    pytest.importorskip("torch")
    from autodbg import collectives

    odd = entry(2, sizes=((8,),))
    text = collectives.verdict(
        [
            result(0, [entry(1), entry(2)]),
            result(1, [entry(1), odd]),
            result(2, [entry(1), entry(2)]),
        ]
    )
    lines = text.splitlines()
    assert lines[0] == (
        "flight recorder: all_reduce #2 of process group 0:default_pg (ranks 0,1,2): "
        "mismatched on rank 1"
    ), text
    assert lines[1].startswith("  entered: ranks 0,2 (input sizes [[4]]"), text
    assert lines[1].endswith("called at /job/train.py:12 in step"), text
    assert lines[2].startswith("  mismatch: rank 1 called all_reduce #2 (input sizes [[8]]"), text
    assert "SIZE_OR_SYNTAX_MISMATCH" in lines[2], text


@pytest.mark.torch
@pytest.mark.timeout(60)
def test_verdict_of_a_dtype_mismatch_and_a_missing_record():
    pytest.importorskip("torch")
    from autodbg import collectives

    text = collectives.verdict(
        [result(0, [entry(1)]), result(1, [entry(1, dtype="Double")]), {"pid": 9, "rank": 2}]
    )
    assert "mismatched on rank 1" in text and "COLLECTIVE_DTYPE_MISMATCH" in text, text
    assert text.endswith("  no record from rank 2\n"), text


@pytest.mark.parametrize(
    "results, said",
    [
        ([], "flight recorder: no record (no rank answered)\n"),
        (
            [{"pid": 1, "flight_recorder": {"error": "torch.distributed is not initialized"}}],
            "flight recorder: no record (torch.distributed is not initialized)\n",
        ),
        (
            [result(0, []), result(1, [])],
            (
                "flight recorder: no collective recorded (TORCH_FR_BUFFER_SIZE in the ranks: "
                "2000; autodbg sets it under AUTODBG_HANG)\n"
            ),
        ),
    ],
    ids=["none", "uninitialized", "empty"],
)
def test_verdict_without_records_is_one_line(results, said):
    from autodbg import collectives

    assert collectives.verdict(results) == said


@pytest.mark.torch
@pytest.mark.timeout(60)
def test_an_error_in_the_analysis_is_one_line(capfd):
    """torch's analysis asserts on an operation it does not know; the verdict is one line."""
    pytest.importorskip("torch")
    from autodbg import collectives

    text = collectives.verdict([result(0, [entry(1, "frobnicate")]), result(1, [entry(1)])])
    assert text.startswith("flight recorder: torch's analysis failed: AssertionError: "), text
    assert text.count("\n") == 1, text
    assert capfd.readouterr().err == ""  # torch's logger stayed quiet


@pytest.mark.torch
@pytest.mark.timeout(60)
def test_matching_records_say_so():
    pytest.importorskip("torch")
    from autodbg import collectives

    text = collectives.verdict([result(rank, [entry(1), entry(2)]) for rank in range(3)])
    assert text == (
        "flight recorder: every recorded collective matched on all ranks of its group "
        "(the last: all_reduce #2 of process group 0:default_pg); "
        "the hang is not a mismatch of collectives\n"
    )


@pytest.mark.torch
@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "given, expected", [({"AUTODBG_HANG": "30"}, "2000"), ({}, "None")], ids=["hang", "no-hang"]
)
def test_buffer_is_set_under_autodbg_hang_only(env, start, given, expected):
    """autodbg sets TORCH_FR_BUFFER_SIZE at `import torch.distributed` under AUTODBG_HANG only."""
    pytest.importorskip("torch")
    env.update(given)
    env.pop("TORCH_FR_BUFFER_SIZE", None)
    code = "import os, torch.distributed; print('buffer', os.environ.get('TORCH_FR_BUFFER_SIZE'))"
    proc = start([PYTHON, "-c", code], env)
    assert proc.wait(50) == 0, proc.output
    assert f"buffer {expected}\n" in proc.output, proc.output


@pytest.mark.torch
@pytest.mark.timeout(60)
def test_the_programs_own_buffer_size_stays(env, start):
    pytest.importorskip("torch")
    env.update(AUTODBG_HANG="30", TORCH_FR_BUFFER_SIZE="7")
    code = "import os, torch.distributed; print('buffer', os.environ.get('TORCH_FR_BUFFER_SIZE'))"
    proc = start([PYTHON, "-c", code], env)
    assert proc.wait(50) == 0, proc.output
    assert "buffer 7\n" in proc.output, proc.output
