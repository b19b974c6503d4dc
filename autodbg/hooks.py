"""The hooks autodbg installs in every process: excepthooks, breakpointhook,
the break signal, post-import hooks and the stack-dump signal.

This module runs at start-up, so it imports only ``sys``, ``os``,
``faulthandler`` (a built-in) and the post-import hook of
:mod:`autodbg._bootstrap`. Everything that
does real work (``session``, ``threading``, sockets, the debugger, torch) is
imported when an exception, a ``breakpoint()``, a signal or an import of the
program calls for it. Each hook is a door of :mod:`autodbg.guard`: what it
does is decided elsewhere (:mod:`autodbg.triage` for "session or not",
:mod:`autodbg.session` for the session), and an error inside becomes one
``autodbg:`` line and Python's own behaviour.
"""

import os
import sys

_original_excepthook = None  # the hook before autodbg's; prints for wrappers above us
_printing_excepthook = None  # what autodbg's hook calls to print the traceback
_printing = False


def install():
    """Install autodbg's hooks in this process. Called once, by the bootstrap.

    Reads the four settings it needs with :func:`autodbg.config.setting`
    (no :class:`autodbg.config.Config` at start-up: the config module says why).
    """
    global _original_excepthook, _printing_excepthook
    # The post-import hook lives in the bootstrap, this function's caller (its docstring says why).
    from autodbg._bootstrap import after_import
    from autodbg.config import setting

    stack_signal = setting("stack_signal")
    if stack_signal is not None:
        import faulthandler

        # fd 2 is sys.stderr's file at start-up; naming it saves the flush() and
        # fileno() calls that file=None makes (some 10 µs).
        faulthandler.register(stack_signal, file=2, all_threads=True, chain=False)
    # py-spy and gdb -p under Yama scope 1, once ctypes is loaded anyway (autodbg.ptrace says why).
    after_import("ctypes", _later("ptrace", "allow"))
    hang = setting("hang")
    if hang is not None:
        from autodbg import watchdog

        watchdog.start(hang)
    if setting("mode") == "off":
        return
    break_signal = setting("break_signal")
    if break_signal is not None:
        import _signal

        _signal.signal(break_signal, break_in)
    _original_excepthook = _printing_excepthook = sys.excepthook
    sys.excepthook = excepthook
    if not os.environ.get("PYTHONBREAKPOINT"):
        sys.breakpointhook = breakpointhook
    after_import("threading", _patch_threading)
    after_import("torch.distributed", _later("torch_hooks", "patch"))
    after_import(
        "torch.distributed.elastic.multiprocessing.api", _later("launcher", "patch_processes")
    )
    after_import(
        "torch.distributed.elastic.agent.server.local_elastic_agent",
        _later("launcher", "patch_agent"),
    )
    # Child processes report their exceptions themselves: sessions there (autodbg.children).
    after_import("multiprocessing.process", _later("children", "patch"))
    after_import("torch.multiprocessing.spawn", _later("children", "patch"))
    after_import("torch.utils.data._utils.worker", _later("children", "patch"))


def excepthook(exc_type, exc, tb):
    """``sys.excepthook``: print the traceback as before, then open a post-mortem session.

    torch's ``init_process_group`` wraps whatever ``sys.excepthook`` is with a
    hook that swaps ``sys.stderr`` for a ``StringIO`` and prints the result
    with a ``[rankN]:`` prefix. autodbg puts itself back on top (see
    :func:`adopt`) and, when torch's hook calls back into it, only prints.
    """
    global _printing
    if _printing:
        return _original_excepthook(exc_type, exc, tb)
    _printing = True
    try:
        _printing_excepthook(exc_type, exc, tb)
    except Exception:
        sys.__excepthook__(exc_type, exc, tb)  # the traceback is printed, whoever failed
    finally:
        _printing = False
    post_mortem(exc, tb)


def adopt(wrapper):
    """Put autodbg's excepthook back on top of ``wrapper``, a hook that wrapped it.

    Args:
        wrapper (Callable): the new ``sys.excepthook`` (torch's), which calls
            autodbg's hook to print; autodbg's hook now calls it first.
    """
    global _printing_excepthook
    _printing_excepthook = wrapper
    sys.excepthook = excepthook


def post_mortem(exc, tb, thread=None):
    """Open a post-mortem session for an uncaught exception, unless :mod:`autodbg.triage` says not.

    Blocks until the session ends. Never raises: an internal error becomes one
    ``autodbg:`` line; a Ctrl-C while the session waits ends it.

    Args:
        exc (BaseException): the exception.
        tb (types.TracebackType | None): its traceback.
        thread (threading.Thread | None): the thread it ended, None for the main thread.
    """
    from autodbg import guard

    try:
        guard.call("the excepthook", _post_mortem, exc, tb, thread)
    except KeyboardInterrupt:
        from autodbg.messages import say

        say("interrupted; no debugger session")


def _post_mortem(exc, tb, thread):
    from autodbg import triage

    open_session, reason = triage.decide(exc, None if thread is None else thread.name)
    if not open_session:
        if reason:
            from autodbg.messages import say

            say(reason)
        session = sys.modules.get("autodbg.session")
        if thread is None and isinstance(exc, KeyboardInterrupt) and session is not None:
            session.end_for_exit("KeyboardInterrupt in the main thread")
        return
    from autodbg import session

    session.post_mortem(exc, tb, thread)


def breakpointhook(*args, **kwargs):
    """``sys.breakpointhook`` (PEP 553): open a session at the caller's frame.

    Reached from a debugger command of a session of this thread (``p
    helper()`` where ``helper`` calls ``breakpoint()``), it opens a nested
    prompt on the same client, as pdb's ``debug`` command does; the outer
    prompt comes back when it ends.
    """
    from autodbg import guard, session

    return guard.call(
        "breakpoint()",
        session.set_trace,
        sys._getframe(1),
        otherwise=lambda: sys.__breakpointhook__(*args, **kwargs),
    )


def break_in(signum, frame):
    """The break signal's handler (``AUTODBG_BREAK_SIGNAL``): a socket session at ``frame``.

    Runs in the main thread, at its next Python instruction (a thread blocked
    in a C call runs it when the call returns). ``autodbg attach <pid>`` sends
    the signal and connects; ``c`` resumes the program where it was. A request
    the CLI has cancelled since (Ctrl-C) is dropped, and so is a signal that
    comes while a session of this process is open (with a line saying so, on
    stderr and to the session's client).
    """
    from autodbg import guard

    guard.call("the break signal", _break_in, frame)


def _break_in(frame):
    from autodbg import guard, session

    if session.break_cancelled():
        return
    busy = guard.anywhere() or (session.current() and "in a debugger session")
    if busy:
        session.tell(f"break signal ignored: this process is {busy} already")
        return
    session.set_trace(
        frame, intro="autodbg: live attach; `c` resumes the program", socket_only=True
    )


def _patch_threading(threading):
    previous = threading.excepthook

    def thread_excepthook(args):
        previous(args)
        if args.exc_type is not SystemExit:
            post_mortem(args.exc_value, args.exc_traceback, args.thread)

    thread_excepthook.__doc__ = "``threading.excepthook``: print as before, then post-mortem."
    threading.excepthook = thread_excepthook


def _later(module, function):
    """Return a post-import callback that imports ``autodbg.<module>`` only when it runs."""

    def callback(imported):
        getattr(__import__(f"autodbg.{module}", fromlist=[function]), function)(imported)

    return callback
