"""One-line messages on the process's original stderr.

Every line starts with ``autodbg:`` and, where known, ``[rank N]``. It goes to
``sys.__stderr__`` because torch's excepthook swaps ``sys.stderr`` for a
``StringIO`` while it runs (``torch/distributed/distributed_c10d.py``).
Not imported at start-up unless a setting is bad.
"""

import sys


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
