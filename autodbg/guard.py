"""The one guard around every entry point of autodbg's code inside the program.

autodbg's code runs inside the user's program from many doors: the
excepthooks, ``breakpoint()``, signal handlers, patched torch functions,
post-import callbacks, autodbg's own threads and exit handlers. Each door goes
through this module, which gives two promises (DESIGN.md, contract 2):

* an ``Exception`` raised by autodbg's part becomes one ``autodbg: internal
  error in <door>: ...`` line and the original behaviour (a fallback the door
  names), never a traceback in the program or a changed exception;
* it knows when a thread is already inside a session (opening one, waiting
  for a client, or running a debugger command), so that a door opened from
  there (a ``breakpoint()`` reached by ``p helper()``, a break signal arriving
  while the session waits) is told so instead of starting a second session
  on top of the first one (:func:`inside`, :func:`busy`).

Why not one ``try`` per door: the doors already had them, and each caught a
different set of errors and said a different line; the tests could not tell
every failure line apart from a normal one. Why per thread and not a global
flag: two threads may crash at once, and the second one's session must wait
for its turn (autodbg.session), not be treated as re-entry.

Imported only when a door opens, never at start-up; imports only ``_thread``.
"""

import _thread
import functools

from autodbg.messages import internal_error

_inside: dict[
    int, str
] = {}  # thread ident -> what autodbg does there now ("a debugger prompt", ...)


def call(where, function, *args, otherwise=None, **kwargs):
    """Run autodbg's ``function(*args, **kwargs)``; on an ``Exception``, say one line and give way.

    Args:
        where (str): the door, for the line (``the excepthook``, ``init_process_group``).
        function (Callable): autodbg's part.
        otherwise (Callable[[], object] | None): the original behaviour, called
            when ``function`` raises; None gives None.

    Returns:
        object: what ``function`` returned, else what ``otherwise()`` returned.
    """
    try:
        return function(*args, **kwargs)
    except Exception as error:
        internal_error(where, error)
        return None if otherwise is None else otherwise()


def protect(where, fallback=None):
    """Decorate autodbg's function so that it never raises an ``Exception`` (see :func:`call`).

    For signal handlers, post-import callbacks and thread targets.

    Args:
        where (str): the door, for the line.
        fallback (Callable | None): called with the same arguments when the
            function raises (the behaviour autodbg stood in for); None returns None.

    Returns:
        Callable[[Callable], Callable]: the decorator; the result keeps the
        function's name and docstring (``functools.wraps``).
    """

    def decorate(function):
        @functools.wraps(function)
        def guarded(*args, **kwargs):
            try:
                return function(*args, **kwargs)
            except Exception as error:
                internal_error(where, error)
                return None if fallback is None else fallback(*args, **kwargs)

        return guarded

    return decorate


class inside:
    """Context manager: this thread is inside a session doing ``what`` until the block ends.

    Nests: the outer state comes back when an inner block ends.

    Args:
        what (str): ``opening a session``, ``waiting for a client``, ``a debugger prompt``.
    """

    def __init__(self, what):
        self._what = what
        self._before = None

    def __enter__(self):
        ident = _thread.get_ident()
        self._before = _inside.get(ident)
        _inside[ident] = self._what
        return self

    def __exit__(self, *exc_info):
        ident = _thread.get_ident()
        if self._before is None:
            _inside.pop(ident, None)
        else:
            _inside[ident] = self._before
        return False


def busy(ident=None):
    """Tell what a thread is doing inside a session, if it is in one.

    Args:
        ident (int | None): a thread ident; None for the calling thread.

    Returns:
        str | None: as given to :class:`inside`, or None when the thread is in
        the program's own code.
    """
    return _inside.get(_thread.get_ident() if ident is None else ident)


def anywhere():
    """Return what some thread of this process is doing inside a session, or None."""
    for what in list(_inside.values()):
        return what
    return None


def forget_all():
    """Forget every thread's state (in a forked child, whose other threads do not exist)."""
    _inside.clear()
