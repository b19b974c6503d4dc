"""The hang watchdog (AUTODBG_HANG): one dump when the main thread makes no progress."""

import os

import pytest

from conftest import PYTHON
from harness import BIN, files_under, target, wait_until


def test_plain_process_dumps_once(env, runtime_dir, start, tmp_path):
    env["AUTODBG_HANG"] = "1"
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    proc = start([PYTHON, target("blocked.py"), str(fifo)], env)
    proc.wait_for("no progress for 1 s at", timeout=30)
    proc.wait_for("in wait_here")
    dumps = wait_until(
        lambda: files_under(runtime_dir, lambda name: name.startswith("hang-")),
        10, "the hang dump file")
    assert "wait_here" in open(dumps[0]).read()
    with open(fifo, "w") as sink:
        sink.write("ok")
    proc.wait_for("released ok")
    assert proc.wait(30) == 0
    assert proc.output.count("no progress for") == 1  # once, not every second


def test_unset_starts_nothing(env, start, tmp_path):
    proc = start([PYTHON, "-c", "import sys, time; time.sleep(1.5); print(sorted(sys.modules))"], env)
    assert proc.wait(30) == 0
    assert "autodbg.watchdog" not in proc.output and "no progress" not in proc.output


@pytest.mark.torch
@pytest.mark.timeout(240)
def test_deadlocked_job_gets_one_grouped_dump(env, runtime_dir, start):
    pytest.importorskip("torch")
    env["AUTODBG_HANG"] = "3"
    job = start([os.path.join(BIN, "torchrun"), "--standalone", "--nproc_per_node=4", target("ddp_hang.py")], env)
    grouped = wait_until(
        lambda: files_under(runtime_dir, lambda name: name == "hang.txt"),
        120, "the job's grouped hang dump")[0]
    text = wait_until(lambda: (lambda t: t if "rank" in t and t.endswith("\n") else "")(open(grouped).read()),
                      30, "hang.txt written")
    # Rank 1 is the odd one out, first; ranks 0,2,3 wait together in all_reduce.
    odd, rest = text.index("rank 1"), text.index("ranks 0,2,3")
    assert odd < rest and "slow_step" in text and "sync" in text
    job.kill()
