"""The hang watchdog (``AUTODBG_HANG=SECONDS``): one dump when the main thread makes no progress.

A thread started with ``_thread`` (``threading`` stays out of start-up) looks
at the main thread every ``min(1, SECONDS / 4)`` seconds. After SECONDS
without progress, autodbg dumps once, and again only after the main thread has
moved to another instruction (a mere wake-up, such as the stack signal that a
job's dump sends to every rank, does not count for that):

* this process's stacks (``faulthandler.dump_traceback``, all threads) to
  stderr and to ``<runtime dir>/<job>/hang-<pid>.txt``;
* in a job whose processes registered for stack dumps (every rank of a torch
  job, :mod:`autodbg.stacks`), the first process to notice also asks every
  process of the job for its stacks and writes them grouped, the odd ones out
  first, to ``<runtime dir>/<job>/hang.txt``: one file that answers "who is
  not where the others are". It opens with the verdict of torch's Flight
  Recorder on the ranks' collectives (:mod:`autodbg.collectives`): the
  collective that some rank never entered or called differently.

What "no progress" means: the main thread has not run at all. Each sample
reads the kernel's accounting of that one thread (its native id, taken in the
main thread at start-up): the context switches, voluntary and involuntary,
in ``/proc/self/task/<tid>/status``, and the CPU time (``utime`` + ``stime``)
in ``/proc/self/task/<tid>/stat``, together with the innermost frame's code
and instruction. No progress = all of them unchanged since the last sample.
A loop that re-enters one call (``time.sleep(0.05)`` each step, a collective
or ``loss.backward()`` each step, torchrun's monitor loop) blocks and wakes
again, and every wake-up is a voluntary switch: progress, though every sample
finds the same instruction. A thread busy in one long C call (a matmul) does
not switch, but its CPU time grows: progress. A thread blocked for good (in a
sleep that never returns, on a deadlocked lock, in a gloo collective waiting
on a socket for a peer, in ``init_process_group`` waiting for a rank) neither
switches nor uses CPU: a hang. Measured: a rank of a 2-rank gloo job waiting
in ``all_reduce`` (or in ``init_process_group``) for a peer that never comes
shows no switch and no CPU tick for as long as it waits; a loop that sleeps
50 ms per step shows 20 switches a second; a matmul, CPU time that grows by
up to a second a second, and no switch.

Rejected: the same frame object at the same instruction (this module's old
rule) cannot tell a loop re-entering a call from a thread stuck in it, and
frame ids are reused (7 false reports in 30 epochs of a healthy job); the
instruction alone has the same flaw; the process's CPU time moves with other
threads (gloo's, the store's, this one); the completion of collectives (the
Flight Recorder) covers collectives only, not a lock or a sleep: it explains
a hang in hang.txt, but does not detect one; ``schedstat`` would be one file, but
the kernel may be built without it. Known limits: a thread that spins at one
place (a CUDA synchronisation spin-waiting on a hung NCCL kernel, a Python
poll loop) uses CPU or switches and counts as progress (NCCL's own watchdog
times such collectives out); a main thread held in C with the GIL held stops
this thread too, which needs the GIL to sample.

Time in a debugger session of this process (a rank stopped on purpose,
waiting for a client or at a prompt) does not count: the count starts again.

The watchdog does not run in torchrun's agent (the launcher): its main thread
sleeps in its monitor loop by design and its workers have watchdogs of their
own. The agent is the process where ``torch.distributed.run`` is imported (the
``torchrun`` script and the deprecated ``torch.distributed.launch`` import it)
or runs as ``__main__`` (``python -m torch.distributed.run``); no training
program imports it. The agent's own module (``torch.distributed.elastic.agent
.server.api``) would not do: ``torch.distributed.checkpoint`` imports it in
every rank. The check runs at each sample, so the watchdog ends at the first
sample after torchrun imports it, long before its monitor loop starts.

It never kills, pauses or signals anything but the stack signal. An error in
it is one ``autodbg: internal error in the hang watchdog: ...`` line
(:mod:`autodbg.guard`) and the program goes on: after an error in a dump the
watchdog goes on watching, after one in its sampling it ends. When
``AUTODBG_HANG`` is unset nothing of this runs or is imported.
"""

import os
import sys
import time

from autodbg.messages import say

COLLECT_TIMEOUT = 5.0  # seconds to gather the job's stacks for hang.txt
WHERE = "the hang watchdog"  # the door's name in autodbg.guard's line


def start(seconds):
    """Start watching the calling (main) thread; returns at once.

    Args:
        seconds (float): how long without progress counts as a hang.
    """
    import _thread

    _thread.start_new_thread(_run, (_thread.get_ident(), _thread.get_native_id(), seconds))


def _run(main, native, seconds):
    from autodbg import guard  # in this thread: functools stays off the start-up path

    guard.call(WHERE, _watch, main, f"/proc/self/task/{native}/", seconds)


def _watch(main, task, seconds):
    from autodbg import guard

    if not os.path.isdir(task):
        say("AUTODBG_HANG needs Linux's /proc/self/task; the hang watchdog is off")
        return
    interval = min(1.0, seconds / 4)
    last = None
    since = time.monotonic()
    dumped = None  # the instruction of the last dump, until the thread moves off it
    while True:
        time.sleep(interval)
        if _launcher():
            return
        frame = sys._current_frames().get(main)
        if frame is None:
            return  # the main thread is gone: the interpreter is ending
        instruction = (frame.f_code, frame.f_lasti)
        del frame
        try:
            sample = (instruction, _accounting(task))
        except FileNotFoundError:
            return  # the same, seen from /proc
        now = time.monotonic()
        if instruction != dumped:
            dumped = None
        if sample != last or _debugging():
            last, since = sample, now
        elif dumped is None and now - since >= seconds:
            dumped = instruction
            guard.call(WHERE, _dump, main, seconds)


def _accounting(task):
    """Return the thread's (context switches, CPU clock ticks) from ``/proc/self/task/<tid>/``."""
    with open(task + "status", "rb") as status:
        # Both voluntary_ctxt_switches and nonvoluntary_ctxt_switches.
        switches = sum(int(line.split()[1]) for line in status if b"_ctxt_switches:" in line)
    with open(task + "stat", "rb") as stat:
        text = stat.read()
    fields = text[text.rindex(b")") + 2 :].split()  # after "pid (comm) ": state is field 3
    return switches, int(fields[11]) + int(fields[12])  # fields 14 and 15: utime, stime


def _launcher():
    """Tell whether this process is torchrun's agent (see the module's docstring)."""
    if "torch.distributed.run" in sys.modules:
        return True
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    return getattr(spec, "name", None) == "torch.distributed.run"


def _debugging():
    """Tell whether a debugger session of this process is open or opening."""
    session = sys.modules.get("autodbg.session")
    guard = sys.modules.get("autodbg.guard")
    return (session is not None and session.current() is not None) or (
        guard is not None and guard.anywhere() is not None
    )


def _dump(main, seconds):
    import faulthandler

    from autodbg import config, identity, registry

    frame = sys._current_frames().get(main)
    where = "?"
    if frame is not None:
        where = f"{frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}"
    del frame
    try:
        folder = registry.job_dir(registry.runtime_dir(config.current().dir), identity.current.job)
    except registry.RuntimeDirError as error:  # the stacks still go to stderr
        say(f"no progress for {seconds:g} s at {where}; stacks of all threads follow ({error})")
        faulthandler.dump_traceback(file=sys.__stderr__, all_threads=True)
        return
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
    """Write the job's grouped stacks to ``hang.txt``, unless another rank does; return its path."""
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
        out.write(_report(processes))
    return path


def _report(processes):
    """The text of ``hang.txt``: the Flight Recorder's verdict, then the grouped stacks."""
    from autodbg import collectives, guard, stacks

    guard.call(WHERE, collectives.request, processes)
    results = stacks.collect(processes, COLLECT_TIMEOUT)
    guard.call(WHERE, collectives.gather, results, processes, COLLECT_TIMEOUT)
    head = guard.call(WHERE, collectives.verdict, results, otherwise=_no_verdict)
    return head + "\n" + stacks.render(results, COLLECT_TIMEOUT)


def _no_verdict():
    return "flight recorder: no verdict (autodbg's error is in the job's log)\n"
