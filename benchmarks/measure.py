"""What the benchmarks share: progress lines, the measured children's environment, small jobs, goal verdicts."""

import os
import subprocess
import sys
import time


def log(message):
    """Progress goes to stderr, so that stdout holds only the results."""
    print(message, file=sys.stderr, flush=True)


def clean_env(autodbg=None):
    """Return the environment for a measured child.

    The caller's ``AUTODBG*`` variables are dropped so that the unset case is
    really unset and ``AUTODBG_MODE`` & co. cannot change the enabled case;
    ``PYTHON*`` variables (``PYTHONPATH``, ``PYTHONBREAKPOINT``,
    ``PYTHONPROFILEIMPORTTIME``...) are dropped so that the caller's settings
    do not shape what is measured.

    Args:
        autodbg (str | None): the value of ``AUTODBG``, None to leave it unset.
    """
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("AUTODBG", "PYTHON"))
    }
    if autodbg is not None:
        env["AUTODBG"] = autodbg
    return env


def start_job(count, runtime_dir, job, argv, **settings):
    """Start ``count`` Python processes that form one job of ``count`` ranks, as torchrun's workers.

    Each runs ``python ARGV`` with ``AUTODBG=1``, torchrun's variables
    (``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``TORCHELASTIC_RUN_ID=job``),
    ``AUTODBG_DIR=runtime_dir`` and ``settings`` (``AUTODBG_*`` names to
    values), and must print ``ready`` on its stdout: blocks until all have,
    and exits the benchmark when one did not.

    Returns:
        list[subprocess.Popen]: the processes, rank order; stop them with :func:`stop_job`.
    """
    procs = []
    for rank in range(count):
        env = clean_env("1")
        env.update(
            settings,
            AUTODBG_DIR=runtime_dir,
            RANK=str(rank),
            LOCAL_RANK=str(rank),
            WORLD_SIZE=str(count),
            TORCHELASTIC_RUN_ID=job,
        )
        procs.append(
            subprocess.Popen(
                [sys.executable, *argv], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
            )
        )
    for proc in procs:
        if proc.stdout.readline().strip() != b"ready":
            stop_job(procs)
            raise SystemExit("a measured process did not start")
    return procs


def stop_job(procs):
    """Kill the processes of :func:`start_job` and wait for them."""
    for proc in procs:
        proc.kill()
    for proc in procs:
        proc.wait()


def verdict(ci, goal):
    """Judge an upper-bound goal on the 95% confidence interval, not on the point estimate alone."""
    low, high = ci
    if high <= goal:
        return "met"
    if low > goal:
        return "NOT met"
    return "inconclusive, the 95% CI spans it"


def time_cli(args, runtime_dir, rounds):
    """Run ``autodbg <args>`` ``rounds`` times against ``runtime_dir``; return (seconds each, last stdout).

    Each run is timed from its start to its exit, the CLI's own start-up
    included. Exits the benchmark with the CLI's output when a run fails.
    """
    env = dict(clean_env(), AUTODBG_DIR=runtime_dir)
    command = [os.path.join(os.path.dirname(sys.executable), "autodbg"), *args]
    times = []
    for _ in range(rounds):
        began = time.perf_counter()
        out = subprocess.run(command, env=env, capture_output=True, text=True)
        times.append(time.perf_counter() - began)
        if out.returncode != 0:
            raise SystemExit(f"{' '.join(command)} failed: {out.stdout}{out.stderr}")
    return times, out.stdout
