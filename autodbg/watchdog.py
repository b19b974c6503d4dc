"""The hang watchdog (``AUTODBG_HANG=SECONDS``): one dump when the main thread stops making progress.

A thread started with ``_thread`` (``threading`` stays out of start-up) looks
at the main thread's innermost frame every ``min(1, SECONDS / 4)`` seconds
through ``sys._current_frames()``. "No progress" is the same frame object at
the same bytecode instruction: a Python loop moves the instruction, a thread
blocked in a C call (a collective, a lock, a sleep) keeps it. After SECONDS
of that, autodbg dumps once, and again only after the thread has moved:

* this process's stacks (``faulthandler.dump_traceback``, all threads) to
  stderr and to ``<runtime dir>/<job>/hang-<pid>.txt``;
* in a job whose processes registered for stack dumps (every rank of a torch
  job, :mod:`autodbg.stacks`), the first process to notice also asks every
  process of the job for its stacks and writes them grouped, the odd ones out
  first, to ``<runtime dir>/<job>/hang.txt``: one file that answers "who is
  not where the others are".

It never kills, pauses or signals anything but the stack signal. When
``AUTODBG_HANG`` is unset nothing of this runs or is imported.
"""

import os
import sys
import time

from autodbg.messages import say

COLLECT_TIMEOUT = 5.0  # seconds to gather the job's stacks for hang.txt


def start(seconds):
    """Start watching the calling (main) thread; returns at once.

    Args:
        seconds (float): how long without progress counts as a hang.
    """
    import _thread

    _thread.start_new_thread(_watch, (_thread.get_ident(), seconds))


def _watch(main, seconds):
    interval = min(1.0, seconds / 4)
    last = None
    since = time.monotonic()
    dumped = False
    while True:
        time.sleep(interval)
        frame = sys._current_frames().get(main)
        if frame is None:
            return  # the main thread is gone: the interpreter is ending
        here = (id(frame), frame.f_code, frame.f_lasti)
        del frame
        session = sys.modules.get("autodbg.session")
        if session is not None and session._current is not None:
            here = None  # someone is debugging this process: waiting on them is no hang
        if here != last or here is None:
            last, since, dumped = here, time.monotonic(), False
            continue
        if not dumped and time.monotonic() - since >= seconds:
            dumped = True
            try:
                _dump(main, seconds)
            except Exception as error:  # a watchdog must never take the program down
                say(f"internal error in the hang watchdog: {type(error).__name__}: {error}")


def _dump(main, seconds):
    import faulthandler

    from autodbg import config, identity, registry

    frame = sys._current_frames().get(main)
    where = "?" if frame is None else f"{frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}"
    folder = registry.job_dir(registry.runtime_dir(config.current().dir), identity.current.job)
    own = os.path.join(folder, f"hang-{os.getpid()}.txt")
    say(f"no progress for {seconds:g} s at {where}; stacks of all threads follow (also in {own})")
    faulthandler.dump_traceback(file=sys.__stderr__, all_threads=True)
    with open(own, "w") as out:
        out.write(f"no progress for {seconds:g} s at {where}\n")
        out.flush()
        faulthandler.dump_traceback(file=out, all_threads=True)
    grouped = _job_stacks(folder)
    if grouped:
        say(f"the job's stacks, grouped, are in {grouped}")


def _job_stacks(folder):
    """Write the job's grouped stacks to ``hang.txt`` unless another process already does; return its path."""
    from autodbg import identity, stacks

    processes = [p for p in stacks.processes(os.path.dirname(folder), identity.current.job)]
    if len(processes) < 2:
        return None
    path = os.path.join(folder, "hang.txt")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        return path  # another rank noticed first and writes it
    with os.fdopen(fd, "w") as out:
        out.write(stacks.render(stacks.collect(processes, COLLECT_TIMEOUT), COLLECT_TIMEOUT))
    return path
