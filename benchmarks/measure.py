"""What the benchmarks share: progress lines, the measured children's environment, goal verdicts."""

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
