"""One-line messages on the process's original stderr.

Every line starts with ``autodbg:`` and, where known, ``[rank N]``. It goes to
``sys.__stderr__`` because torch's excepthook swaps ``sys.stderr`` for a
``StringIO`` while it runs (``torch/distributed/distributed_c10d.py``).
Not imported at start-up unless a setting is bad.
"""

import _thread
import sys
import time

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
REFUSALS_PERIOD = 10.0  # seconds: the window in which refusals of one reason are counted
REFUSALS_SHOWN = 5  # lines a reason gets in one window; the ones beyond are counted
_refusals: dict = {}  # reason -> [window start (monotonic s), lines shown, left out, last line left out]
_refusals_lock = _thread.allocate_lock()  # _thread: built in, no import cost


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


def refused(reason, text):
    """Print the line of one refused client, unless its reason flooded stderr already.

    A reason gets :data:`REFUSALS_SHOWN` lines in a window of
    :data:`REFUSALS_PERIOD` seconds (the first of them opens the window);
    the refusals beyond are counted, and when the window ends one more line,
    the last of them, says how many were left out: ``<text> (12 more refused
    in the last 10 s)``. So a single refusal is one clear line, and a flood of
    bad clients (a port scan, a script retrying) costs a few lines a window.
    The closing line is printed by a timer thread, ``autodbg-refusals``,
    started by the first refusal left out. Never blocks, never raises.

    Args:
        reason (str): what the refusal is for, without what varies from
            client to client (its address): ``web: wrong token``.
        text (str): the line, without the prefix, as :func:`say` takes it.
    """
    now = time.monotonic()
    with _refusals_lock:
        entry = _refusals.get(reason)
        if entry is None or now - entry[0] >= REFUSALS_PERIOD:
            entry = _refusals[reason] = [now, 0, 0, None]
        show = entry[1] < REFUSALS_SHOWN
        if show:
            entry[1] += 1
        else:
            entry[2] += 1
            entry[3] = text
        first_left_out = not show and entry[2] == 1
    if show:
        say(text)
    elif first_left_out:
        import threading

        # _left_out cannot raise (say never does): no guard needed, nor the import cycle.
        timer = threading.Timer(entry[0] + REFUSALS_PERIOD - now, _left_out, (reason, entry))
        timer.name, timer.daemon = "autodbg-refusals", True
        timer.start()


def _left_out(reason, entry):
    with _refusals_lock:
        if _refusals.get(reason) is entry:
            del _refusals[reason]  # the next refusal opens a new window
        count, text = entry[2], entry[3]
    more = f" ({count - 1} more refused in the last {REFUSALS_PERIOD:g} s)" if count > 1 else ""
    say(f"{text}{more}")
