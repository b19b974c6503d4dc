"""torchelastic's error file, for torchrun's "Root Cause" with no ``@record`` on the program's main.

torchrun gives each worker a path in ``TORCHELASTIC_ERROR_FILE``; a worker
whose ``main`` is decorated with ``@record``
(``torch.distributed.elastic.multiprocessing.errors``) writes its exception
there, and when the job fails the agent reads it for the summary's ``Root
Cause (first observed failure)``: exception, traceback, rank. Without
``@record`` the summary says only ``traceback : To enable traceback see:
...``. autodbg's excepthook writes the same file, in the same format
(``ErrorHandler.record_exception`` in
``torch/distributed/elastic/multiprocessing/errors/error_handler.py``, torch
2.13), with no import of torch.

Written only by the worker itself (its parent is the autodbg-aware agent,
``AUTODBG_LAUNCHER``): its child processes inherit the variable, and their
failure is not the rank's. Never over a file that is there already: a
program with ``@record`` wrote its own before the exception reached the hook.
Only for an ``Exception``, as ``@record`` records.
"""

import json
import os
import time
import traceback

from autodbg import config


def write(exc):
    """Write ``exc`` to ``TORCHELASTIC_ERROR_FILE`` when this process is a torchrun worker.

    Called by the excepthook, before the session: the agent reads the file
    when the worker has ended, whenever that is. Does nothing when the
    variable is unset, the process is not the agent's worker, ``exc`` is not
    an ``Exception`` or the file exists.

    Args:
        exc (BaseException): the uncaught exception, with its ``__traceback__``.

    Raises:
        OSError: the file cannot be written (the caller's guard makes it one line).
    """
    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if not path or not isinstance(exc, Exception) or config.current().launcher != os.getppid():
        return
    data = {
        "message": {
            "message": f"{type(exc).__name__}: {exc}",
            "extraInfo": {
                "py_callstack": "".join(traceback.format_exception(exc)),
                "timestamp": str(int(time.time())),
            },
        }
    }
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return
    with os.fdopen(fd, "w") as out:
        json.dump(data, out)
