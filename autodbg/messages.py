"""One-line messages on the process's original stderr.

Every line starts with ``autodbg:`` and, where known, ``[rank N]``. It goes to
``sys.__stderr__`` because torch's excepthook swaps ``sys.stderr`` for a
``StringIO`` while it runs (``torch/distributed/distributed_c10d.py``).
Not imported at start-up unless a setting is bad.
"""

import sys

# How every line about a failure of autodbg's own begins, after the prefix: the
# tests fail on any of them (tests/conftest.py), so each such line uses one.
FAILURES = (
    "internal error",  # :func:`internal_error`: a bug of autodbg's, caught by autodbg.guard
    "could not hook",  # a module of the program's that autodbg could not patch
    "cannot write the session record",
    "cannot write the crash record",
    "stack dumps go to stderr only",  # autodbg.stacks could not set up the stack file
    "could not update the stack file's header",
    "stack dumps of this child go to its parent's file",
    "not installed:",  # the bootstrap failed: Python goes on without autodbg
    "cannot listen on TCP",  # AUTODBG_LISTEN set, but the session has no TCP listener
    "cannot serve the session's page",  # AUTODBG_MODE=web, but no page: no session
    "AUTODBG_MODE=web needs the websockets package",
)


def say(text):
    """Print ``autodbg: [rank N] <text>`` on the original stderr; never raises.

    Args:
        text (str): one line, without the prefix.
    """
    from autodbg import identity

    line = f"autodbg: {identity.current.label()}{text}\n"
    try:
        stream = sys.__stderr__
        stream.write(line)
        stream.flush()
    except Exception:
        try:
            import os

            os.write(2, line.encode("utf-8", "replace"))
        except OSError:
            pass


def internal_error(where, error):
    """Print the one line for an error inside autodbg: ``internal error in <where>: <Type>: <text>``.

    Args:
        where (str): which of autodbg's entry points failed, e.g. ``the excepthook``.
        error (BaseException): what it raised.
    """
    say(f"internal error in {where}: {type(error).__name__}: {error}")
