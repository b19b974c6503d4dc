"""Sessions in child processes: ``multiprocessing.Process``, ``torch.multiprocessing.spawn``
and DataLoader workers.

An exception in a child never reaches ``sys.excepthook``: the code that runs
the child catches it first and reports it its own way. So autodbg wraps those
places, each patched through the post-import hook of :mod:`autodbg.hooks` when
the program imports the module (autodbg never imports torch itself). Children
inherit ``AUTODBG`` and ``AUTODBG_JOB``; with the spawn and forkserver start
methods the new interpreter runs ``autodbg.pth`` and patches the modules as it
imports them, with fork it inherits the patched modules.

``multiprocessing.process.BaseProcess._bootstrap`` (CPython 3.10 to 3.13)
    runs ``self.run()`` in every multiprocessing child (fork, spawn, forkserver;
    torch's children are such processes too), catches everything, writes
    ``Process <name>:`` and ``traceback.print_exc()`` to stderr, and returns
    exit code 1. A wrapper has no way into that ``except`` block, so it runs
    ``run`` under :func:`_run`, which prints the same text itself, opens the
    session, and raises ``SystemExit(1)``: ``_bootstrap`` turns that into the
    same exit code and prints nothing. The traceback printed starts at
    ``_bootstrap``'s frame, as ``print_exc`` shows it there, because
    :func:`_run`'s own frame is replaced by a ``types.TracebackType`` for its
    caller. One difference in order: the session (and so the print) comes
    before multiprocessing's exit handlers (``util._exit_function``, which
    ``_bootstrap`` runs before printing), so queues and pipes are still open
    in the debugger.

``torch.multiprocessing.spawn._wrap`` (torch 2.x)
    calls ``fn(i, *args)``; on an ``Exception`` it pickles
    ``traceback.format_exc()`` to a file and calls ``sys.exit(1)`` inside its
    ``except`` block, printing nothing. The parent reads the file once the
    child has exited. The wrapper catches that ``SystemExit``, whose
    ``__context__`` is the exception with its traceback intact, opens the
    session and lets the exit go on: the parent's ``ProcessRaisedException``
    is what it would have been.

``ExceptionWrapper`` as named in ``torch.utils.data._utils.worker`` (torch 2.x)
    is what ``_worker_loop`` makes in its ``except`` around
    ``fetcher.fetch(index)`` (and around ``worker_init_fn``): it formats the
    traceback into text for the main process, and the frames are gone. The
    replacement opens the session first, while the dataset's ``__getitem__``
    frame is still there, then builds torch's wrapper.

Each child gets a role (``Process-1``, ``spawn process 1``,
``DataLoader worker 0``) and its parent's pid and rank, for its record and its
``autodbg:`` lines (:meth:`autodbg.identity.Identity.child`). A parent that
then fails only because its child did is collateral (:mod:`autodbg.triage`).
"""

import functools
import sys

from autodbg import guard, hooks, identity

# Targets of torch's children, by (module, name): the parameter that numbers
# the child, and the role it gets.
_TORCH_TARGETS = {
    ("torch.multiprocessing.spawn", "_wrap"): ("i", "spawn process {}"),
    ("torch.utils.data._utils.worker", "_worker_loop"): ("worker_id", "DataLoader worker {}"),
}


def patch(module):
    """Patch a just-imported module that runs child processes (see the module docstring).

    Safe to call twice on a module.

    Args:
        module (types.ModuleType): ``multiprocessing.process``,
            ``torch.multiprocessing.spawn`` or ``torch.utils.data._utils.worker``.

    Raises:
        KeyError: for any other module.
    """
    patches = {
        "multiprocessing.process": _patch_bootstrap,
        "torch.multiprocessing.spawn": _patch_spawn_wrap,
        "torch.utils.data._utils.worker": _patch_worker_exceptions,
    }
    patches[module.__name__](module)


def _patch_bootstrap(process_module):
    base = process_module.BaseProcess
    original = base._bootstrap
    if getattr(original, "__autodbg__", False):
        return

    @functools.wraps(original)
    def _bootstrap(self, *args, **kwargs):
        guard.call("multiprocessing's child", _wrap_run, self, process_module)
        try:
            return original(self, *args, **kwargs)
        finally:
            # A forked child ends with os._exit, which runs no exit handler: its
            # stack file (a DataLoader worker's) goes here.
            stacks = sys.modules.get("autodbg.stacks")
            if stacks is not None:
                guard.call("multiprocessing's child", stacks.remove_own_file)

    _bootstrap.__autodbg__ = True
    base._bootstrap = _bootstrap


def _wrap_run(process, process_module):
    # An instance attribute, so that a subclass's own run() is the one wrapped.
    process.run = functools.partial(_run, process, process.run, process_module)


def _run(process, run, process_module):
    """Run the child's ``run``; on an exception print it as ``_bootstrap`` does, then a session.

    Called by ``_bootstrap`` (through a ``functools.partial``, which adds no
    frame) once the child is set up.

    Raises:
        SystemExit: 1 after an exception (``_bootstrap``'s exit code for it),
            or the child's own ``SystemExit``.
    """
    _name_child(process, process_module)
    try:
        run()
    except SystemExit:
        raise
    except BaseException as exc:
        caller = sys._getframe(1)  # _bootstrap, where print_exc would have started
        # If autodbg fails before printing, _bootstrap gets the child's exception and prints it.
        if guard.call(
            "multiprocessing's child", _report, process, exc, caller, otherwise=lambda: False
        ):
            raise SystemExit(1) from None
        raise


def _report(process, exc, caller):
    """Print ``exc`` as ``_bootstrap`` would from ``caller``, then its session; return True."""
    import traceback
    import types

    tb = types.TracebackType(exc.__traceback__.tb_next, caller, caller.f_lasti, caller.f_lineno)
    sys.stderr.write(f"Process {process.name}:\n")
    traceback.print_exception(type(exc), exc, tb)
    sys.stderr.flush()  # the traceback first, then the session's line
    hooks.post_mortem(exc, tb)  # lets KeyboardInterrupt and the like pass, as at top level
    return True


def _name_child(process, process_module):
    guard.call("naming a child process", _name, process, process_module)


def _name(process, process_module):
    parent = process_module.parent_process()
    identity.current = identity.current.child(
        _role(process), None if parent is None else parent.pid
    )


def _role(process):
    # BaseProcess keeps the target and its arguments in _target, _args and
    # _kwargs (multiprocessing/process.py, unchanged since Python 2.6).
    target = getattr(process, "_target", None)
    known = _TORCH_TARGETS.get(
        (getattr(target, "__module__", None), getattr(target, "__qualname__", None))
    )
    if known is None:
        return process.name
    parameter, role = known
    code = getattr(target, "__wrapped__", target).__code__
    try:
        position = code.co_varnames[: code.co_argcount].index(parameter)
        value = (
            process._args[position] if position < len(process._args) else process._kwargs[parameter]
        )
    except (ValueError, KeyError, AttributeError):
        return process.name  # another torch version's signature: the name still says which child
    return role.format(value)


def _patch_spawn_wrap(spawn):
    original = spawn._wrap
    if getattr(original, "__autodbg__", False):
        return

    # Same module and name (functools.wraps): pickled by reference for the spawn
    # start method, it is found again in the child; _role() reads the original's ``i``.
    @functools.wraps(original)
    def _wrap(*args, **kwargs):
        try:
            return original(*args, **kwargs)
        except SystemExit as exit:
            guard.call("torch.multiprocessing.spawn's child", _spawned_child_failed, exit, original)
            raise

    _wrap.__autodbg__ = True
    spawn._wrap = _wrap


def _spawned_child_failed(exit, original):
    failure = exit.__context__
    if _raised_in(exit, original) and isinstance(failure, Exception):
        hooks.post_mortem(failure, failure.__traceback__)


def _raised_in(exc, function):
    # The exit _wrap makes itself (sys.exit adds no frame), not one from fn.
    tb = exc.__traceback__
    while tb.tb_next is not None:
        tb = tb.tb_next
    return tb.tb_frame.f_code is function.__code__


def _patch_worker_exceptions(worker):
    original = worker.ExceptionWrapper
    if getattr(original, "__autodbg__", False):
        return

    # Only this module's name is replaced: torch._utils.ExceptionWrapper, which
    # the main process checks with isinstance() and unpickles, stays the class.
    @functools.wraps(original, updated=())
    def ExceptionWrapper(*args, **kwargs):
        guard.call("a DataLoader worker", _worker_failed, args, kwargs)  # kwargs may hold `where`
        return original(*args, **kwargs)

    ExceptionWrapper.__autodbg__ = True
    worker.ExceptionWrapper = ExceptionWrapper


def _worker_failed(args, kwargs):
    # ExceptionWrapper(exc_info=None, where=...) (torch/_utils.py): no exc_info means the one being handled.
    exc_info = (args[0] if args else kwargs.get("exc_info")) or sys.exc_info()
    hooks.post_mortem(exc_info[1], exc_info[2])
