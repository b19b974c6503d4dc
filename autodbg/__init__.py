"""autodbg: a zero-code debugger injector for Python and distributed PyTorch jobs.

``AUTODBG=1 python prog.py`` (or ``torchrun ...``) turns any uncaught exception
into a debugger session at the failing frame, on the terminal or on a Unix
socket that ``autodbg attach`` reaches. The functions below are for programs
that want the same thing explicitly.

This module is imported on the start-up path, so it holds no imports of its own.
"""

__version__ = "0.1.0"
__all__ = ["catch", "install", "post_mortem", "set_trace"]


def install():
    """Install autodbg's hooks in this process, as ``AUTODBG=1`` does at start-up.

    For programs started without ``AUTODBG``. Safe to call twice (the second
    call does nothing).
    """
    from autodbg import hooks

    hooks.start()


def set_trace(frame=None):
    """Open a session at ``frame`` (default: the caller's), like ``breakpoint()``.

    Blocks until the session ends (``c``, ``q``, or no client within ``AUTODBG_WAIT``).

    Args:
        frame (types.FrameType | None): the frame to stop in.
    """
    import sys

    from autodbg import session

    session.set_trace(frame or sys._getframe(1))


def post_mortem(exc=None):
    """Open a post-mortem session for ``exc`` (default: the exception being handled).

    Blocks until the session ends, as for an uncaught exception.

    Args:
        exc (BaseException | None): the exception whose traceback to debug.

    Raises:
        ValueError: no exception was given and none is being handled.
    """
    import sys

    from autodbg import session

    exc = exc or sys.exc_info()[1]
    if exc is None:
        raise ValueError("autodbg.post_mortem() needs an exception: none is being handled")
    session.post_mortem(exc, exc.__traceback__, None)


def catch(function):
    """Decorate ``function`` so that its exception opens a session that can ``retry`` the call.

    The decorator form of ``AUTODBG_CATCH`` (:mod:`autodbg.retry` describes the
    session: ``retry``, ``return VALUE``, ``q``). Without autodbg installed in
    the process (no ``AUTODBG=1``, no :func:`install`) the wrapper only calls
    the function: its exceptions go on up as they would.

    Args:
        function (Callable): a function, method or coroutine function.

    Returns:
        Callable: the wrapper, with ``function``'s name, docstring and ``__wrapped__``.

    Raises:
        TypeError: ``function`` is a generator function.
    """
    from autodbg import retry

    return retry.catch(function)
