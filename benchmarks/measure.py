"""What the benchmarks share: progress lines, the measured children's environment, goal verdicts."""

import os
import sys


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
