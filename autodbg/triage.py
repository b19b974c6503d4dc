"""Session or not, and why: the one table of cases for an uncaught exception.

Every door that has an exception to debug (``sys.excepthook``,
``threading.excepthook``, the child-process wrappers of :mod:`autodbg.children`)
asks :func:`decide`. The table, first match wins (the README has the same):

==========================================================  =======  ==========================
exception                                                   session  line on stderr
==========================================================  =======  ==========================
none, ``KeyboardInterrupt``, ``SystemExit``, ``bdb.BdbQuit``  no       none: Python's behaviour
torchelastic's ``SignalException`` (torchrun was signalled)  no       none: the job is ending
torchelastic's ``ChildFailedError`` (torchrun's report)      no       none: the worker had one
raised in one of autodbg's own threads (``autodbg-*``)       no       the guard's line
``AUTODBG_COLLATERAL=debug``                                 yes
a parent reporting its child's failure (torch.multiprocessing's
``ProcessRaisedException``/``ProcessExitedException``,
"Caught ... in DataLoader worker process N")                 no       collateral
a communication error of a rank whose peer is gone
(``Connection closed by peer``, ``Broken pipe``, ...)        no       collateral
a communication error (gloo, NCCL, c10d, timed out) while
another rank of the job has a session open                   no       collateral
anything else                                                yes
==========================================================  =======  ==========================

Names are matched by class name and module, so that nothing here imports
torch; the torch rows apply only once the program imported it.
"""

import os
import sys

from autodbg import config, identity

# Phrases of gloo's, NCCL's and the c10d store's errors when a peer process is gone.
_PEER_GONE = ("Connection closed by peer", "Connection reset by peer", "Broken pipe")
# What makes an exception a communication failure that another rank can cause.
_COMMUNICATION = ("gloo", "nccl", "NCCL", "c10d", "Timed out", "timed out", "Connection")
_DIST_ERRORS = ("DistError", "DistBackendError", "DistNetworkError", "DistStoreError")
_ELASTIC = "torch.distributed.elastic"
_DATALOADER_RERAISE = " in DataLoader worker process "  # torch._utils.ExceptionWrapper.reraise
_COLLATERAL = (
    " (collateral, not this {}'s bug); no debugger session (AUTODBG_COLLATERAL=debug opens one)"
)


def decide(exc, thread_name=None):
    """Decide whether an uncaught exception gets a debugger session.

    Args:
        exc (BaseException | None): the exception.
        thread_name (str | None): the name of the thread it ended; None for
            the main thread.

    Returns:
        tuple[bool, str | None]: whether to open a session, and the one line
        to print when not (None to stay quiet, as Python would).
    """
    if exc is None or isinstance(exc, (KeyboardInterrupt, SystemExit)):
        return False, None
    kind = type(exc)
    if kind.__name__ == "BdbQuit" and kind.__module__ == "bdb":
        return False, None  # the user quit pdb at a breakpoint: Python just prints it
    if kind.__module__.startswith(_ELASTIC) and kind.__name__ in (
        "SignalException",
        "ChildFailedError",
    ):
        return False, None
    if thread_name is not None and thread_name.startswith("autodbg-"):
        return False, None
    retry = sys.modules.get("autodbg.retry")
    if retry is not None and retry.debugged(exc):
        return False, None  # a catch session let it (or its cause) go: debugged once
    if config.current().collateral == "debug":
        return True, None
    reason = _failed_child(exc)
    if reason is None and "torch.distributed" in sys.modules:
        reason = _communication(exc)
    return reason is None, reason


def _failed_child(exc):
    kind = type(exc)
    if any(
        c.__name__ == "ProcessException" and c.__module__ == "torch.multiprocessing.spawn"
        for c in kind.__mro__
    ):
        index, pid = getattr(exc, "error_index", "?"), getattr(exc, "error_pid", "?")
        return (
            f"{kind.__name__} because spawn process {index} (pid {pid}) failed"
            + _COLLATERAL.format("process")
        )
    try:
        first = str(exc).partition("\n")[0]
    except Exception:
        return None
    if first.startswith("Caught ") and _DATALOADER_RERAISE in first:
        worker = first.rpartition(" ")[2].rstrip(".")
        return f"{kind.__name__} re-raised from DataLoader worker {worker}" + _COLLATERAL.format(
            "process"
        )
    return None


def _communication(exc):
    if not isinstance(exc, RuntimeError):
        return None
    kind = type(exc)
    text = str(exc)
    if any(phrase in text for phrase in _PEER_GONE):
        why = "a peer rank is gone"
    elif kind.__name__ in _DIST_ERRORS or any(marker in text for marker in _COMMUNICATION):
        peers = _peers_in_session()
        if not peers:
            return None
        why = (
            f"rank {peers[0]} is in a debugger session"
            if len(peers) == 1
            else f"ranks {peers} are in debugger sessions"
        )
    else:
        return None
    return f"{kind.__name__} because {why}" + _COLLATERAL.format("rank")


def _peers_in_session():
    from autodbg import registry

    try:
        records = registry.sessions(registry.runtime_dir(config.current().dir))
    except registry.RuntimeDirError:
        return []
    me = identity.current
    return sorted(
        r["rank"] if r.get("rank") is not None else r["pid"]
        for r in records
        if r.get("job") == me.job and r["pid"] != os.getpid()
    )
