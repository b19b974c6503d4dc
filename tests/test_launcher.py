"""torchrun's process with autodbg: a test per torch behaviour that autodbg.launcher relies on.

It keeps a job alive for a rank's session, hands Ctrl-C to it, lets a signal
from outside end the job, keeps torchrun's failure summary whole, and never
stops a background job on the terminal.
"""

import os
import re
import signal
import subprocess
import termios
import time

import pexpect
import psutil
import pytest
from harness import BIN, records, target, wait_for_record, wait_until

pytest.importorskip("torch")
pytestmark = [pytest.mark.torch, pytest.mark.slow, pytest.mark.timeout(240)]
TORCHRUN = os.path.join(BIN, "torchrun")


def test_worker_exit_does_not_kill_a_rank_in_session(env, runtime_dir, start, spawn):
    job = start([TORCHRUN, "--standalone", "--nproc_per_node=3", target("rank_exits.py")], env)
    record = wait_for_record(runtime_dir, timeout=120, rank=1, state="waiting")
    job.wait_for("rank 2 exits")
    job.wait_for("autodbg: a worker exited, but rank 1 has a debugger session open")
    # Rank 0 (in all_reduce) and rank 1 (in its session) are alive, and rank 1 answers.
    assert psutil.pid_exists(record["pid"])
    nc = spawn(f"nc -U {record['socket']}", env)
    nc.expect("ipdb> ")
    nc.sendline("p marker")
    nc.expect("11")
    nc.sendline("q")
    nc.expect(pexpect.EOF)
    assert job.wait(60) != 0
    # Rank 1 ended with its own status, not torchrun's SIGTERM.
    assert f"exitcode  : -15 (pid: {record['pid']})" not in job.output


def test_ctrl_c_interrupts_the_debugger_not_the_job(env, runtime_dir, spawn, tmp_path):
    script = tmp_path / "job.sh"
    command = f"{TORCHRUN} --standalone --nproc_per_node=2 {target('slow_command.py')}"
    script.write_text(f"stty -a > {tmp_path}/before\n{command}\nstty -a > {tmp_path}/after\n")
    job = spawn(f"bash {script}", env, timeout=120)
    job.expect("ipdb>")
    job.sendline("!print('start' + 'ed'); import time; time.sleep(pause)")
    job.expect("started")
    # The command runs: the terminal is back in cooked mode, so Ctrl-C is SIGINT for torchrun.
    wait_until(
        lambda: termios.tcgetattr(job.child_fd)[3] & termios.ISIG, 10, "the terminal in cooked mode"
    )
    job.sendcontrol("c")
    job.expect("KeyboardInterrupt")
    job.expect("ipdb>")
    job.sendline("p pause + 1")
    job.expect("31")
    job.expect("ipdb>")
    job.sendline("q")
    job.expect(pexpect.EOF, timeout=60)
    assert (tmp_path / "before").read_text() == (tmp_path / "after").read_text()


def listed_ranks(output):
    """Return the ranks that torchrun's failure summary (``ChildFailedError``) names."""
    summary = output[output.index("Failures:") :]
    return sorted(int(rank) for rank in re.findall(r"rank +: (\d+) \(local_rank", summary))


def without_autodbg(env):
    return {k: v for k, v in env.items() if not k.startswith("AUTODBG")}


def test_summary_lists_every_failed_rank(env, runtime_dir, start, spawn):
    # SubprocessContext._poll records, after its close(), the status of workers
    # that ended meanwhile: autodbg's wait for them must not reap them.
    command = [TORCHRUN, "--standalone", "--nproc_per_node=4", target("all_ranks_fail.py")]
    plain_job = start(command, without_autodbg(env))
    job = start(command, env)
    wait_until(lambda: len(records(runtime_dir)) == 4, 120, "4 sessions")
    assert plain_job.wait(60) == 1
    for rank in (
        1,
        0,
        2,
        3,
    ):  # each session ended in turn, the first one while the others hold the job
        record = wait_for_record(runtime_dir, rank=rank, state="waiting")
        nc = spawn(f"nc -U {record['socket']}", env)
        nc.expect("ipdb> ")
        nc.sendline("q")
        nc.expect(pexpect.EOF)
    assert job.wait(60) == 1
    assert listed_ranks(job.output) == listed_ranks(plain_job.output) == [0, 1, 2, 3]
    assert "<NO_OTHER_FAILURES>" not in job.output
    root_cause = job.output[job.output.index("Root Cause (first observed failure)") :]
    assert "rank      : 1 (local_rank: 1)" in "\n".join(root_cause.splitlines()[:6])
    assert "exitcode  : -15" not in job.output  # each ended with its own status


def test_timeout_ends_a_hung_job_as_without_autodbg(env, start):
    # torchrun's handler raises SignalException on SIGTERM: no session, nothing held.
    command = ["timeout", "-s", "TERM", "12", *torchrun_args(2, "ddp_hang.py")]
    began = time.monotonic()
    jobs = {"off": start(command, without_autodbg(env)), "on": start(command, env)}
    ended = {}
    for name, job in jobs.items():
        assert job.wait(60) == 124, job.output  # timeout's status when its command was timed out
        ended[name] = time.monotonic() - began
    assert abs(ended["on"] - ended["off"]) < 3, ended
    assert "autodbg: " not in jobs["on"].output.replace("autodbg: [rank", "")  # no session, no hold


def torchrun_args(nproc, script):
    return [TORCHRUN, "--standalone", f"--nproc_per_node={nproc}", target(script)]


@pytest.mark.parametrize(
    "sig, script, when, client",
    [
        (signal.SIGTERM, "ddp_crash.py", "autodbg: rank 1 is in a debugger session", True),
        # During autodbg's hold of torchrun's close (after rank 2's exit).
        (
            signal.SIGHUP,
            "rank_exits.py",
            "autodbg: a worker exited, but rank 1 has a debugger session open",
            True,
        ),
        # No worker owns the terminal: a Ctrl-C is for the job. (With a client attached,
        # the SIGINT that torchrun's close sends the worker is a client's Ctrl-C to it.)
        (signal.SIGINT, "ddp_crash.py", "autodbg: rank 1 is in a debugger session", False),
    ],
    ids=["SIGTERM-attached-session", "SIGHUP-during-hold", "SIGINT-waiting-session"],
)
def test_a_signal_from_outside_ends_the_job_and_its_sessions(
    env, runtime_dir, start, spawn, sig, script, when, client
):
    job = start(torchrun_args(3, script), env)
    record = wait_for_record(runtime_dir, timeout=120, rank=1, state="waiting")
    job.wait_for(when, timeout=60)
    if client:
        nc = spawn(f"nc -U {record['socket']}", env)
        nc.expect("ipdb> ")
    sent = time.monotonic()
    os.kill(job.pid, sig)
    if client:
        nc.expect(pexpect.EOF, timeout=15)
    # torchrun's status for its SignalException (re-raised by launch_agent), as without autodbg.
    assert job.wait(30) == 1
    assert time.monotonic() - sent < 10  # not torchrun's 30 s grace, nor AUTODBG_WAIT
    name = signal.Signals(sig).name
    assert (
        job.output.count(
            f"autodbg: torchrun got {name}: ending the job; rank 1's debugger session ends"
        )
        == 1
    )
    assert job.output.count(f"SignalException: Process {job.pid} got signal: {int(sig)}") == 1
    assert (
        not psutil.pid_exists(record["pid"])
        or psutil.Process(record["pid"]).status() == psutil.STATUS_ZOMBIE
    )
    assert records(runtime_dir) == []


def test_a_background_job_on_the_terminal_ends(env, spawn):
    # The launcher restores the terminal's modes only from the foreground: else SIGTTOU stops it.
    env["CRASH_RANKS"] = "9"  # no rank crashes: the job ends by itself, with status 0
    shell = spawn("bash --norc --noprofile -i", dict(env, PS1="prompt$ "))
    shell.expect_exact("prompt$ ")
    shell.sendline(
        f"{' '.join(torchrun_args(1, 'ddp_crash.py'))} >/dev/null 2>&1 & wait %1; echo status=$?"
    )
    assert shell.expect([r"status=\d+", "Stopped"], timeout=60) == 0, shell.logfile_read.getvalue()
    assert shell.after == "status=0"
    shell.sendline("exit")
    shell.expect(pexpect.EOF)


@pytest.fixture
def elastic_api(monkeypatch):
    """torchelastic's multiprocessing API patched by autodbg.launcher in this process, restored after."""
    from torch.distributed.elastic.multiprocessing import api

    from autodbg import launcher

    monkeypatch.setattr(api, "_terminate_process_handler", api._terminate_process_handler)
    monkeypatch.setattr(api.PContext, "close", api.PContext.close)
    monkeypatch.setattr(launcher._Signalled, "error", None)
    monkeypatch.setattr(launcher._Signalled, "told", False)
    launcher.patch_processes(api)
    return api


def test_ctrl_c_for_a_worker_that_is_gone_is_torchruns(elastic_api, monkeypatch):
    from autodbg import launcher

    gone = subprocess.Popen(["true"])
    gone.wait()
    monkeypatch.setattr(launcher, "_terminal_owner", lambda: {"pid": gone.pid})
    handler = elastic_api._terminate_process_handler
    assert (
        handler.__wrapped__.__module__ == elastic_api.__name__
    )  # functools.wraps, *args and **kwargs
    with pytest.raises(elastic_api.SignalException, match="got signal: 2$"):
        handler(signal.SIGINT, None)
    assert launcher._Signalled.error is not None  # from outside: nothing is held now


def test_an_error_in_the_signal_handler_is_one_line_and_torchs_handler(
    elastic_api, monkeypatch, capfd
):
    from autodbg import launcher

    def broken():
        raise OSError("no runtime directory")

    monkeypatch.setattr(launcher, "_terminal_owner", broken)
    with pytest.raises(elastic_api.SignalException, match="got signal: 2$"):
        elastic_api._terminate_process_handler(signal.SIGINT, None)
    lines = capfd.readouterr().err.splitlines()
    assert lines == [
        "autodbg: internal error in torchrun's signal handler: OSError: no runtime directory"
    ]


def test_an_error_in_the_announcer_is_one_line(monkeypatch, capfd):
    from autodbg import launcher

    def broken():
        raise KeyError("pid")

    monkeypatch.setattr(launcher, "_sessions", broken)
    monkeypatch.setattr(launcher._Announcer, "_thread", None)
    launcher._Announcer.start()
    thread = launcher._Announcer._thread
    assert thread.name == "autodbg-announcer"  # autodbg.triage: never a session
    thread.join(10)
    assert not thread.is_alive()  # it ended quietly
    assert capfd.readouterr().err.splitlines() == [
        "autodbg: internal error in torchrun's announcer: KeyError: 'pid'"
    ]
