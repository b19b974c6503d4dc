"""Catch a call's exception before its stack unwinds, so that ``retry`` and ``return VALUE`` can bring it back.

A function named in ``AUTODBG_CATCH`` (put in place by the post-import hook
through :mod:`autodbg.targets`, ``__main__:func`` for the main script), or
decorated with :func:`autodbg.catch`, is replaced by a wrapper that calls it.
When the call raises an ``Exception``, the wrapper prints the traceback as
Python would print it there (the frames above the call included) and opens a
post-mortem session of it with the failing frame and its callers alive; the
session's commands decide what happens next:

* ``retry`` calls the function again with the same arguments (after a
  ``reload``, that is the new code: :mod:`autodbg.reload` patches the
  function's ``__code__`` in place). If it returns, its value goes to the
  caller and the program goes on as if nothing had failed; if it raises,
  a new session opens for the new exception;
* ``return VALUE`` evaluates ``VALUE`` in the session's current frame and
  gives it to the caller without calling again;
* ``q``, ``c``, end of input on the console, or no client within
  ``AUTODBG_WAIT``: the exception goes on up, the same object with its
  traceback (re-raised with a bare ``raise``), as if autodbg were not there.
  It is not debugged twice: the traceback is not printed again, and no
  session opens for it, or for an exception it caused, at the excepthook
  (:func:`debugged`, which :mod:`autodbg.triage` asks).

The wrapper catches ``Exception`` only (KeyboardInterrupt and SystemExit go
through), opens nothing when autodbg is not installed in the process, when
:mod:`autodbg.triage` says the exception is not the program's bug (a
collective that failed because another rank died), or when the thread is
inside a session already (a catch target called from a debugger command
raises into that command). Anything that goes wrong in autodbg's part
becomes one ``autodbg:`` line and the exception goes on up.

The idea of re-running a failed call from the debugger is the one of
Smalltalk's and Common Lisp's restarts; in Python, where the stack unwinds
before any excepthook runs, the call must be caught where it is made.

Start-up path (with ``AUTODBG_CATCH`` set): imports only ``sys``.
"""

import sys

_CO_GENERATOR_OR_ASYNC_GENERATOR = 0x220
_CO_COROUTINE = 0x80
_KEPT = 8  # exceptions let go that are remembered, newest last (they hold their frames)

_let_go: dict = {}  # id(exception) -> exception, for the ones a catch session let go
_RAISE = ("raise", None)


def watch(pairs, after_import):
    """Catch the calls of the functions named by ``pairs`` from the time their modules define them.

    Called by :func:`autodbg.hooks.install` at start-up. Never blocks.

    Args:
        pairs (Iterable[tuple[str, str]]): ``(module, qualname)`` pairs, as
            :func:`autodbg.config.setting` gives them for ``catch``.
        after_import (Callable[[str, Callable], None]): :func:`autodbg.hooks.after_import`.
    """
    from autodbg import targets

    targets.watch(pairs, _found, after_import, "AUTODBG_CATCH")


def _found(owner, name, function):
    """``found`` of :func:`autodbg.targets.watch`: put the catching wrapper in place."""
    if getattr(function, "_autodbg_caught", None) is not None:
        return  # named twice, or decorated with @autodbg.catch as well
    try:
        wrapper = catch(function)
    except TypeError as error:
        from autodbg.messages import say

        say(f"AUTODBG_CATCH: {error}; left alone")
        return
    from autodbg import targets

    targets.replace(owner, name, wrapper)


def catch(function):
    """Return ``function`` wrapped so that its exceptions open a session that can ``retry`` the call.

    What :func:`autodbg.catch` and ``AUTODBG_CATCH`` apply; the module's
    docstring describes the session. The wrapper keeps the function's name,
    docstring and signature (``functools.wraps``, so ``__wrapped__`` leads to
    it: :mod:`autodbg.reload` patches the function itself). A coroutine
    function gets a coroutine function.

    Args:
        function (Callable): a function or coroutine function.

    Returns:
        Callable: the wrapper. Its call blocks, when the function raises, for
        as long as the session lasts (up to ``AUTODBG_WAIT`` for a client).

    Raises:
        TypeError: ``function`` is a generator function (its exception comes
            from a later ``next``, where there is no call to retry).
    """
    import functools

    code = getattr(function, "__code__", None)
    if code is not None and code.co_flags & _CO_GENERATOR_OR_ASYNC_GENERATOR:
        raise TypeError(
            f"{function.__module__}:{function.__qualname__} is a generator function: no call to retry"
        )

    if code is not None and code.co_flags & _CO_COROUTINE:

        @functools.wraps(function)
        async def caught_coroutine(*args, **kwargs):
            while True:
                try:
                    return await function(*args, **kwargs)
                except Exception as error:
                    action, value = _debug(error, sys._getframe(), function)
                    if action == "raise":
                        raise
                if action == "return":
                    return value

        caught_coroutine._autodbg_caught = function  # type: ignore[attr-defined]
        return caught_coroutine

    @functools.wraps(function)
    def caught(*args, **kwargs):
        while True:
            try:
                return function(*args, **kwargs)
            except Exception as error:
                action, value = _debug(error, sys._getframe(), function)
                if action == "raise":
                    raise  # a bare raise: the traceback stays as it was
            # Out of the except block: a retry's exception has no __context__ of the first one.
            if action == "return":
                return value

    caught._autodbg_caught = function  # type: ignore[attr-defined]
    return caught


def debugged(exc):
    """Tell whether ``exc``, or an exception in its ``__cause__``/``__context__`` chain, was let go by a catch session.

    Args:
        exc (BaseException): an uncaught exception.

    Returns:
        bool: True when a session already debugged it: no second session.
    """
    seen = set()
    while exc is not None and id(exc) not in seen:
        if _let_go.get(id(exc)) is exc:
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


def shown(exc):
    """Tell whether ``exc`` itself was let go by a catch session, which printed its traceback already."""
    return _let_go.get(id(exc)) is exc


def _debug(error, frame, function):
    """Run the session for ``error``, raised by the call in the wrapper's ``frame``.

    Returns:
        tuple[str, object]: ``("retry", None)``, ``("return", value)`` or ``("raise", None)``.
    """
    from autodbg import guard

    try:
        return guard.call("AUTODBG_CATCH", _session, error, frame, function, otherwise=_raise)
    except KeyboardInterrupt:  # an outside SIGINT while the session waited: go on as it would
        from autodbg.messages import say

        say("interrupted; no debugger session")
        return _RAISE


def _raise():
    return _RAISE


def _session(error, frame, function):
    import threading

    from autodbg import config, guard, triage

    # Loaded by AUTODBG=1 or autodbg.install(), and only then is autodbg installed;
    # looked up, not imported: the hooks import this module (AUTODBG_CATCH).
    hooks = sys.modules.get("autodbg.hooks")
    if hooks is None or not hooks.started() or config.setting("mode") == "off" or guard.busy():
        return _RAISE
    thread = threading.current_thread()
    thread = None if thread is threading.main_thread() else thread
    open_session, _ = triage.decide(error, None if thread is None else thread.name)
    if not open_session:
        return _RAISE  # the excepthook, if it gets there, says why
    own = error.__traceback__
    tb = _whole_traceback(own, frame.f_back)
    _let_go[id(error)] = error
    while len(_let_go) > _KEPT:
        del _let_go[next(iter(_let_go))]
    from autodbg import session

    name = f"{function.__module__}:{function.__qualname__}"
    # Python prints an exception's own traceback, whatever tb its hook is given. The
    # re-raise gets its own back: the frames above are added again as it unwinds.
    error.__traceback__ = tb
    try:
        hooks.print_exception(type(error), error, tb)
        outcome = session.post_mortem(error, tb, thread, caught=name)
    finally:
        error.__traceback__ = own
    if outcome is None:
        return _RAISE
    _let_go.pop(id(error), None)
    return outcome


def _whole_traceback(tb, frame):
    """Return the traceback a handler at the top would see: ``frame`` and its callers above ``tb``.

    ``tb`` starts at the wrapper's own entry, which is left out.
    """
    kind = type(tb)
    tb = tb.tb_next
    while frame is not None:
        tb = kind(tb, frame, frame.f_lasti, frame.f_lineno)
        frame = frame.f_back
    return tb
