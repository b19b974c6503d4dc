"""Let this user's debuggers attach where Yama's ptrace scope is 1: py-spy, ``gdb -p``, ``pdb -p``.

With ``/proc/sys/kernel/yama/ptrace_scope`` at 1 (Ubuntu's and many clusters'
default), a process may only be traced by its ancestors, so ``py-spy dump``
from another shell is refused without root. A process can lift that for
itself with ``prctl(PR_SET_PTRACER, PR_SET_PTRACER_ANY)``: then any process
that passes the ordinary ptrace checks (same uid, or ``CAP_SYS_PTRACE``) may
attach, as scope 0 allows for every process. Scopes 2 and 3 are left alone:
there only an administrator, or nobody, may attach, and a prctl cannot change
that. See the kernel's ``Documentation/admin-guide/LSM/Yama.rst``.

When, and why not at start-up: Python's standard library has no ``prctl``,
and ``ctypes``, the only way to call it, costs about 3 ms to import (the
start-up budget is 1 ms; ``_ctypes`` alone is 0.6 ms). So the call is made
when ``ctypes`` is loaded anyway, for nothing but the syscall:

- when the program imports ``ctypes`` (``torch`` does, so every torch rank and
  torchrun's launcher are covered from ``import torch`` on), through the
  post-import hook that :mod:`autodbg.hooks` installs;
- when a debugger session opens (it loads much more than ``ctypes``).

The permission is per process and not inherited across ``fork``, so a forked
child (a DataLoader worker) sets it again right after the fork. Reading the
scope costs one small file read; with no Yama (the file is missing) nothing
else happens.
"""

import os

SCOPE_PATH = "/proc/sys/kernel/yama/ptrace_scope"
PR_SET_PTRACER = 0x59616D61  # "Yama", from <linux/prctl.h>
PR_SET_PTRACER_ANY = (1 << 64) - 1  # ((unsigned long)-1)

_state = None  # None: not tried; "no": nothing to do; else the prctl function


def scope(path=None):
    """Return Yama's ptrace scope (0 to 3), None when Yama is absent or the file unreadable.

    Args:
        path (str | None): the sysctl file; None for :data:`SCOPE_PATH`.
    """
    try:
        with open(path or SCOPE_PATH, "rb") as source:
            return int(source.read().strip())
    except (OSError, ValueError):
        return None


def allow(_module=None):
    """Let processes of this user ptrace this one, when Yama's scope is 1; once per process.

    Never raises: a failed prctl is one ``autodbg:`` line. Costs one small file
    read when the scope is not 1, else the import of ``ctypes`` if not loaded yet.

    Args:
        _module (types.ModuleType | None): the imported ``ctypes`` when called as a
            post-import hook; unused.

    Returns:
        bool: True when this call or an earlier one lifted the restriction.
    """
    global _state
    if _state is None:
        _state = "no"
        if scope() != 1:
            return False
        try:
            import ctypes

            prctl = ctypes.CDLL(None, use_errno=True).prctl
            prctl.argtypes = (
                ctypes.c_int,
                ctypes.c_ulong,
                ctypes.c_ulong,
                ctypes.c_ulong,
                ctypes.c_ulong,
            )
            prctl.restype = ctypes.c_int
        except Exception as error:
            _say(
                f"cannot let debuggers attach (py-spy needs root here): {type(error).__name__}: {error}"
            )
            return False
        if not _apply(prctl):
            return False
        _state = prctl
        os.register_at_fork(after_in_child=_again)
    return _state != "no"


def _apply(prctl):
    import ctypes

    if prctl(PR_SET_PTRACER, PR_SET_PTRACER_ANY, 0, 0, 0) == 0:
        return True
    _say(
        f"cannot let debuggers attach: prctl(PR_SET_PTRACER) failed: {os.strerror(ctypes.get_errno())}; "
        "py-spy and gdb -p need root here (Yama ptrace_scope 1)"
    )
    return False


def _again():
    if _state not in (None, "no"):
        _apply(_state)


def _say(text):
    from autodbg.messages import say

    say(text)
