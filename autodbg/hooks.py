"""The start-up path: the hooks autodbg installs in every process, and the post-import hook.

``autodbg.pth``'s one line calls :func:`start` when ``AUTODBG`` is true. It
installs ``sys.excepthook``, ``sys.breakpointhook``, the break signal and the
stack-dump signal, and watches for the imports of ``threading``, torch's
modules and ``multiprocessing`` to patch them (:func:`after_import`). Each
hook is a door of :mod:`autodbg.guard`: what it does is decided elsewhere
(:mod:`autodbg.triage` for "session or not", :mod:`autodbg.session` for the
session), and an error inside becomes one ``autodbg:`` line and Python's own
behaviour. Importing this module does nothing; :func:`start` never raises.

The post-import hook: ``threading.excepthook`` cannot be set before
``threading`` is imported, and importing it at start-up would cost every
process; torch must never be imported by autodbg. So this module, on
``sys.meta_path`` (the import system asks any object there for
``find_spec``), watches for the import of a few names and wraps their
loader, which runs autodbg's callback right after the module's code (the
post-import hook idea of PEP 369, done with PEP 451 loaders). It finds
nothing itself and costs one dict look-up per import. A name stays watched
until its module is actually executed: a program that asks
``importlib.util.find_spec(name)`` first gets a spec with the wrapped loader,
and its later ``import`` gets another one; the callback runs once, for the
module that is executed.

Why one module for all of start-up (DESIGN.md draws a bootstrap, a hooks
module and an import-hook module): start-up time. Each module that start-up
imports costs some 0.33 M instructions, about 70 µs on the development VM
(the import system's find, stats, .pyc read and exec, measured with
callgrind), and ``AUTODBG=1`` may add at most 1 ms to ``python -c pass``.
Start-up imports the package, this module and :mod:`autodbg.config`, the
only reader of ``AUTODBG_*`` variables. For the same reason nothing here
makes a class at start-up (a class costs as much as a small module): the
finder is this module itself, and the loader wrapper's class is made at the
first import of a watched name.

Start-up path: imports only ``sys``, ``os`` (both loaded before any ``.pth``
line runs), :mod:`autodbg.config` and ``faulthandler`` (a built-in).
Everything that does real work (``session``, ``threading``, sockets, the
debugger, torch) is imported when an exception, a ``breakpoint()``, a signal
or an import of the program calls for it.
"""

import os
import sys

_original_excepthook = None  # the hook before autodbg's; prints for wrappers above us
_printing_excepthook = None  # what autodbg's hook calls to print the traceback
_printing = False

_watched: dict = {}  # module name -> callback
_busy: set = set()  # names whose spec this module is asking the other finders for
_loader_class = None


def after_import(name, callback):
    """Call ``callback(module)`` right after the module ``name`` is first imported.

    If it is already imported, call it now. Several callbacks for one name
    run in the order they were given.

    Args:
        name (str): the module's full name.
        callback (Callable[[types.ModuleType], None]): errors in it are reported
            as one ``autodbg:`` line, never raised into the importer.
    """
    module = sys.modules.get(name)
    if module is not None:
        _run_callback(callback, module)
        return
    if not _watched:
        sys.meta_path.insert(0, sys.modules[__name__])
    previous = _watched.get(name)
    if previous is not None:
        callback = _both(previous, callback)
    _watched[name] = callback


def _both(first, then):
    def callback(module):
        _run_callback(first, module)
        _run_callback(then, module)

    return callback


def find_spec(name, path=None, target=None):
    """The meta-path finder's method (PEP 451): a watched name's spec, with its loader wrapped.

    Args:
        name (str): the module's full name.
        path (list[str] | None): the parent package's ``__path__``.
        target (types.ModuleType | None): the module being reloaded.

    Returns:
        importlib.machinery.ModuleSpec | None: the spec the next finder
        returns, its loader wrapped when it has ``exec_module``; None for a
        name that is not watched.
    """
    if name not in _watched or name in _busy:
        return None
    _busy.add(name)
    try:
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            if find is None or find is find_spec:
                continue
            spec = find(name, path, target)
            if spec is not None:
                break
        else:
            return None
    finally:
        _busy.discard(name)
    if spec.loader is not None and hasattr(spec.loader, "exec_module"):
        spec.loader = _wrapper()(spec.loader, name)
    return spec


def _run_callback(callback, module):
    try:
        callback(module)
    except Exception as error:
        from autodbg.messages import say

        say(f"could not hook {module.__name__}: {type(error).__name__}: {error}")


def _wrapper():
    """Return the class of the loader wrapper, made at its first use."""
    global _loader_class
    if _loader_class is None:

        class _CallbackLoader:
            """Delegates to the real loader, then runs the watched name's callback on the executed module."""

            def __init__(self, loader, name):
                self._loader = loader
                self._name = name

            def __getattr__(self, name):
                return getattr(self._loader, name)

            def create_module(self, spec):
                return self._loader.create_module(spec)

            def exec_module(self, module):
                # Give the module its real loader back before its code runs, so that
                # nothing the module or its users inspect ever sees this wrapper.
                module.__loader__ = self._loader
                if module.__spec__ is not None:
                    module.__spec__.loader = self._loader
                self._loader.exec_module(module)
                callback = _watched.pop(self._name, None)
                if callback is not None:
                    _run_callback(callback, module)

        _loader_class = _CallbackLoader
    return _loader_class


_started = False


def start():
    """Install autodbg in this process (``autodbg.pth``, or :func:`autodbg.install`); never raises.

    Exports ``AUTODBG_JOB`` so that child processes join this process's job
    (see :mod:`autodbg.identity`; a launcher's job id, when there is one,
    still comes first), then installs the hooks. Does nothing when it ran
    already. An error becomes one ``autodbg:`` line and Python goes on as if
    autodbg were not installed.
    """
    global _started
    if _started:
        return
    _started = True
    try:
        os.environ.setdefault("AUTODBG_JOB", f"pg{os.getpgrp()}")
        install()
    except Exception as error:  # never break the user's interpreter start-up
        sys.stderr.write(f"autodbg: not installed: {type(error).__name__}: {error}\n")


def install():
    """Install autodbg's hooks in this process. Called once, by :func:`start`.

    Reads the seven settings it needs with :func:`autodbg.config.setting`
    (no :class:`autodbg.config.Config` at start-up: the config module says why).
    """
    global _original_excepthook, _printing_excepthook
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
    after_import("asyncio.base_events", _patch_asyncio)
    # Fix and retry: each module patches its targets as their modules are imported.
    if setting("trace"):
        from autodbg import trace

        trace.watch(setting("trace"), after_import)
    if setting("catch"):
        from autodbg import retry

        retry.watch(setting("catch"), after_import)
    if setting("reload") == "watch":
        from autodbg import reload

        reload.watch()


def excepthook(exc_type, exc, tb):
    """``sys.excepthook``: print the traceback as before, then open a post-mortem session.

    torch's ``init_process_group`` wraps whatever ``sys.excepthook`` is with a
    hook that swaps ``sys.stderr`` for a ``StringIO`` and prints the result
    with a ``[rankN]:`` prefix. autodbg puts itself back on top (see
    :func:`adopt`) and, when torch's hook calls back into it, only prints.
    """
    if _printing:
        return _original_excepthook(exc_type, exc, tb)
    retry = sys.modules.get("autodbg.retry")
    if retry is None or not retry.shown(exc):  # a catch session printed it, and let it go
        print_exception(exc_type, exc, tb)
    if "TORCHELASTIC_ERROR_FILE" in os.environ:  # a torchrun worker, or its child
        from autodbg import error_file, guard

        guard.call("torchelastic's error file", error_file.write, exc)
    post_mortem(exc, tb)


def print_exception(exc_type, exc, tb):
    """Print a traceback as the excepthook does: through torch's ``[rankN]:`` wrapper when it is set.

    Never raises: when the hook in use fails, Python's own prints it.

    Args:
        exc_type (type[BaseException]): the exception's type.
        exc (BaseException): the exception.
        tb (types.TracebackType | None): the traceback to print.
    """
    global _printing
    _printing = True
    try:
        _printing_excepthook(exc_type, exc, tb)
    except Exception:
        sys.__excepthook__(exc_type, exc, tb)  # the traceback is printed, whoever failed
    finally:
        _printing = False


def started():
    """Tell whether autodbg is installed in this process (``AUTODBG=1`` or :func:`autodbg.install`)."""
    return _started


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
        retry = sys.modules.get("autodbg.retry")
        # A catch session printed it and let it go: not printed twice by Python's own hook.
        if not (previous is threading.__excepthook__ and retry and retry.shown(args.exc_value)):
            previous(args)
        if args.exc_type is not SystemExit:
            post_mortem(args.exc_value, args.exc_traceback, args.thread)

    thread_excepthook.__doc__ = "``threading.excepthook``: print as before, then post-mortem."
    threading.excepthook = thread_excepthook


def _patch_asyncio(base_events):
    from autodbg import tasks

    tasks.patch(base_events, post_mortem)


def _later(module, function):
    """Return a post-import callback that imports ``autodbg.<module>`` only when it runs."""

    def callback(imported):
        getattr(__import__(f"autodbg.{module}", fromlist=[function]), function)(imported)

    return callback
