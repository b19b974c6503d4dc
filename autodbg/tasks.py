"""asyncio: a session for a task's exception that nothing retrieved, and the ``tasks`` command.

A task that fails while nothing awaits it keeps its exception until it is
collected; then its loop reports it to its exception handler ("Task
exception was never retrieved", ``asyncio.Task.__del__``) and, without a
handler of the program's, to ``BaseEventLoop.default_exception_handler``,
which logs it. autodbg wraps that default handler (never
``loop.set_exception_handler``, which would replace a program's own): after
the log line, as without autodbg, a post-mortem session opens at the task's
failing frame, its traceback still holding every frame. A program that set
its own handler handles these itself: no session.

``tasks`` lists the tasks of every running loop of the process (each loop
noted as it starts ``run_forever``) with the chain of coroutines each is in
and what the innermost awaits, as ``python -m asyncio pstree`` shows on
3.14, here from :func:`asyncio.all_tasks` and each task's ``cr_await``
chain. It is a snapshot: the loops' threads keep running.
"""

import functools
import sys
import threading
import weakref

from autodbg import guard

_loops: "weakref.WeakSet" = weakref.WeakSet()  # every loop that ran run_forever
NEVER_RETRIEVED = "exception was never retrieved"  # asyncio's message, for a task or a future


def patch(base_events, post_mortem):
    """Wrap ``BaseEventLoop.default_exception_handler`` and note each loop at ``run_forever``.

    Called by the post-import hook of ``asyncio.base_events``.

    Args:
        base_events (module): ``asyncio.base_events``.
        post_mortem (Callable): :func:`autodbg.hooks.post_mortem`, called with
            ``(exc, tb, thread)`` for an exception nothing retrieved.
    """
    loop_class = base_events.BaseEventLoop
    default = loop_class.default_exception_handler
    run_forever = loop_class.run_forever

    @functools.wraps(default)
    def default_exception_handler(self, context, *args, **kwargs):
        result = default(self, context, *args, **kwargs)
        guard.call("the asyncio exception handler", _never_retrieved, context, post_mortem)
        return result

    @functools.wraps(run_forever)
    def run_forever_noted(self, *args, **kwargs):
        guard.call("noting an asyncio loop", _loops.add, self)
        return run_forever(self, *args, **kwargs)

    loop_class.default_exception_handler = default_exception_handler
    loop_class.run_forever = run_forever_noted


def _never_retrieved(context, post_mortem):
    exc = context.get("exception")
    message = str(context.get("message", ""))
    if not isinstance(exc, Exception) or not message.endswith(NEVER_RETRIEVED):
        return
    thread = threading.current_thread()
    post_mortem(exc, exc.__traceback__, None if thread is threading.main_thread() else thread)


def describe():
    """Return the lines of the ``tasks`` listing: each running loop's tasks and what they await.

    Returns:
        list[str]: a header line per running loop (its thread), then one block
        per task: ``<name> (<state>)``, its coroutines outermost first as
        ``  <qualname> at <file>:<line>``, and ``  awaits <what>``; a line
        saying there is none when no loop runs.
    """
    import asyncio

    threads = {t.ident: t.name for t in threading.enumerate()}
    lines = []
    for loop in list(_loops):
        if not loop.is_running():
            continue
        ident = getattr(loop, "_thread_id", None)
        lines.append(
            f"loop in thread {threads.get(ident, ident)} (a snapshot: its thread keeps running)"
        )
        for task in sorted(asyncio.all_tasks(loop), key=lambda t: t.get_name()):
            lines.extend(_task_lines(task))
    return lines or ["no asyncio loop is running in this process"]


def _task_lines(task):
    state = "cancelling" if task.cancelling() else "pending"
    lines = [f"{task.get_name()} ({state})"]
    coro = task.get_coro()
    while coro is not None:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        name = getattr(coro, "__qualname__", type(coro).__name__)
        if frame is None:
            break
        lines.append(f"  {name} at {frame.f_code.co_filename}:{frame.f_lineno}")
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    waiter = getattr(task, "_fut_waiter", None)
    if isinstance(waiter, sys.modules["asyncio"].Task):
        lines.append(f"  awaits task {waiter.get_name()}")
    elif waiter is not None:
        lines.append(f"  awaits {waiter!r}")
    return lines


def command(debugger, arg):
    """The debugger's ``tasks`` command: print :func:`describe`'s listing.

    Args:
        debugger (pdb.Pdb): the session's debugger (prints with ``message``).
        arg (str): ignored.
    """
    if "asyncio" not in sys.modules:
        debugger.message("this process has not imported asyncio: no tasks")
        return
    for line in describe():
        debugger.message(line)
