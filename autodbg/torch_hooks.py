"""Everything that knows about torch.distributed and torchrun's launcher.

Imported only when the program itself imports ``torch.distributed`` (through
the post-import hook in :mod:`autodbg.hooks`) or when an exception reaches
autodbg in a process that has imported it; autodbg never imports torch.

Torch behaviour relied on (torch 2.13, ``torch/distributed/distributed_c10d.py``):
``init_process_group`` replaces ``sys.excepthook`` with ``_distributed_excepthook``,
which calls the previous hook with ``sys.stderr`` swapped for a ``StringIO``
and then prints the text with a ``[rankN]:`` prefix. A debugger started under
it would write into the ``StringIO`` and the traceback would show only after
the session, so autodbg puts its own hook back on top after the call.
"""

import functools
import sys

from autodbg import hooks

# Phrases of gloo's and the c10d store's errors when a peer process is gone.
_PEER_GONE = (
    "Connection closed by peer",
    "Connection reset by peer",
    "Broken pipe",
)


def patch(distributed):
    """Wrap ``init_process_group`` of the just-imported ``torch.distributed``.

    Args:
        distributed (types.ModuleType): the ``torch.distributed`` module.
    """
    c10d = getattr(distributed, "distributed_c10d", None)
    if c10d is None or getattr(c10d.init_process_group, "__autodbg__", False):
        return  # torch built without distributed support, or patched already
    original = c10d.init_process_group

    @functools.wraps(original)
    def init_process_group(*args, **kwargs):
        try:
            return original(*args, **kwargs)
        finally:
            _reclaim_excepthook()

    init_process_group.__autodbg__ = True
    c10d.init_process_group = init_process_group
    if getattr(distributed, "init_process_group", None) is original:
        distributed.init_process_group = init_process_group


def _reclaim_excepthook():
    hook = sys.excepthook
    if hook is not hooks.excepthook and getattr(hook, "__name__", "") == "_distributed_excepthook":
        hooks.adopt(hook)


def let_pass(exc):
    """Decide whether an exception in a torch.distributed process gets no session.

    Args:
        exc (BaseException): the uncaught exception.

    Returns:
        bool | str: True to pass quietly (torchrun's launcher reporting a failed
        worker with ``ChildFailedError``: the worker's own session is the one to
        debug), a one-line reason for a collateral failure (a peer rank is gone),
        False to open a session.
    """
    kind = type(exc)
    if kind.__name__ == "ChildFailedError" and kind.__module__.startswith("torch.distributed.elastic"):
        return True
    if isinstance(exc, RuntimeError) and any(p in str(exc) for p in _PEER_GONE):
        return f"{kind.__name__} because a peer rank is gone (collateral, not this rank's bug); no debugger session"
    return False
