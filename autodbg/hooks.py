"""The hooks autodbg installs in every process: excepthooks, breakpointhook,
post-import hooks and the stack-dump signal.

This module runs at start-up, so it imports only ``sys``, ``os`` and
``faulthandler`` (a built-in). Everything that does real work (``session``,
``threading``, sockets, the debugger, torch) is imported when an exception,
a ``breakpoint()`` or an import of the program calls for it.

``threading.excepthook`` cannot be set before ``threading`` is imported, and
importing it at start-up would cost every process; so a meta-path finder
watches for the import and patches the module right after it executes
(the post-import hook idea of PEP 369, done with PEP 451 loaders). The same
finder patches ``torch.distributed`` when, and only when, the program imports it.
"""

import os
import sys

_config = None
_original_excepthook = None  # the hook before autodbg's; prints for wrappers above us
_printing_excepthook = None  # what autodbg's hook calls to print the traceback
_printing = False


def install(config):
    """Install autodbg's hooks in this process. Called once, by the bootstrap.

    Args:
        config (autodbg.config.Config): the settings to follow.
    """
    global _config, _original_excepthook, _printing_excepthook
    _config = config
    if config.stack_signal is not None:
        import faulthandler

        faulthandler.register(config.stack_signal, all_threads=True, chain=False)
    # py-spy and gdb -p under Yama scope 1, once ctypes is loaded anyway (autodbg.ptrace says why).
    after_import("ctypes", _later("ptrace", "allow"))
    if config.hang is not None:
        from autodbg import watchdog

        watchdog.start(config.hang)
    if config.mode == "off":
        return
    if config.break_signal is not None:
        import _signal

        _signal.signal(config.break_signal, break_in)
    _original_excepthook = _printing_excepthook = sys.excepthook
    sys.excepthook = excepthook
    if not os.environ.get("PYTHONBREAKPOINT"):
        sys.breakpointhook = breakpointhook
    after_import("threading", _patch_threading)
    after_import("torch.distributed", _later("torch_hooks", "patch"))
    after_import("torch.distributed.elastic.multiprocessing.api", _later("launcher", "patch_processes"))
    after_import("torch.distributed.elastic.agent.server.local_elastic_agent", _later("launcher", "patch_agent"))
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
    """Open a post-mortem session for an uncaught exception, unless it is one to let pass.

    Never raises: an internal error becomes one ``autodbg:`` line.

    Args:
        exc (BaseException): the exception.
        tb (types.TracebackType | None): its traceback.
        thread (threading.Thread | None): the thread it ended, None for the main thread.
    """
    try:
        reason = _let_pass(exc)
        if reason:
            if reason is not True:
                say(reason)
            return
        from autodbg import session

        session.post_mortem(exc, tb, thread)
    except KeyboardInterrupt:
        say("interrupted; no debugger session")
    except Exception as error:
        say(f"internal error, no debugger session: {type(error).__name__}: {error}")


def breakpointhook(*args, **kwargs):
    """``sys.breakpointhook`` (PEP 553): open a session at the caller's frame."""
    try:
        from autodbg import session

        return session.set_trace(sys._getframe(1))
    except Exception as error:
        say(f"internal error in breakpoint(): {type(error).__name__}: {error}")
        return sys.__breakpointhook__(*args, **kwargs)


def break_in(signum, frame):
    """The break signal's handler (``AUTODBG_BREAK_SIGNAL``): a socket session at ``frame``.

    Runs in the main thread, at its next Python instruction (a thread blocked
    in a C call runs it when the call returns). ``autodbg attach <pid>`` sends
    the signal and connects; ``c`` resumes the program where it was. A request
    the CLI has cancelled since (Ctrl-C) is dropped.
    """
    try:
        from autodbg import session

        if not session.break_cancelled():
            session.set_trace(frame, intro="autodbg: live attach; `c` resumes the program", socket_only=True)
    except Exception as error:
        say(f"internal error in the break signal: {type(error).__name__}: {error}")


def _let_pass(exc):
    """Return True (quietly) or a one-line reason when ``exc`` gets no session."""
    if exc is None or isinstance(exc, (KeyboardInterrupt, SystemExit)):
        return True
    kind = type(exc)
    if kind.__name__ == "BdbQuit" and kind.__module__ == "bdb":
        return True  # the user quit pdb at a breakpoint: Python just prints it
    if "torch.distributed" in sys.modules:
        from autodbg import torch_hooks

        return torch_hooks.let_pass(exc)
    return False


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


_watched = {}


def after_import(name, callback):
    """Call ``callback(module)`` right after the module ``name`` is first imported.

    If it is already imported, call it now. The finder is inserted once at the
    front of ``sys.meta_path`` and costs one dict look-up per import.

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
        sys.meta_path.insert(0, _PostImportFinder)
    _watched[name] = callback


def say(text):
    """Print one ``autodbg:`` line (see :mod:`autodbg.messages`, imported only when needed)."""
    from autodbg import messages

    messages.say(text)


def _run_callback(callback, module):
    try:
        callback(module)
    except Exception as error:
        say(f"could not hook {module.__name__}: {type(error).__name__}: {error}")


class _PostImportFinder:
    """A meta-path finder that finds nothing itself: it wraps the loader of watched modules."""

    _busy = set()

    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name not in _watched or name in cls._busy:
            return None
        cls._busy.add(name)
        try:
            for finder in sys.meta_path:
                find = getattr(finder, "find_spec", None)
                if finder is cls or find is None:
                    continue
                spec = find(name, path, target)
                if spec is not None:
                    break
            else:
                return None
        finally:
            cls._busy.discard(name)
        if spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        spec.loader = _CallbackLoader(spec.loader, _watched.pop(name))
        return spec


class _CallbackLoader:
    """Delegates to the real loader, then runs the callback on the executed module."""

    def __init__(self, loader, callback):
        self._loader = loader
        self._callback = callback

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
        _run_callback(self._callback, module)
