"""The debugger's ``threads`` and ``thread [N]`` commands: every thread of the process.

pdb shows one thread only (CPython issue 85743). ``threads`` lists each
thread of :func:`sys._current_frames` with its name, ident, daemon flag and
where it is; ``thread N`` shows thread N's stack in the session (``where``,
``up``, ``p`` work on it), opened at its innermost frame of the program's own
code (:func:`autodbg.frames.program_frame`), as a post-mortem session opens;
``thread`` alone goes back to the session's own stack. Other threads keep
running: a stack is a snapshot taken when ``thread N`` is typed, and its
line numbers are those of that moment.
"""

import os
import sys
import threading

from autodbg import frames


def command_threads(debugger, arg):
    """The debugger's ``threads`` command: print one line per thread of the process.

    Args:
        debugger (pdb.Pdb): the session's debugger (prints with ``message``).
        arg (str): ignored.
    """
    home = _home(debugger)
    viewed = getattr(debugger, "autodbg_viewed_thread", None) or threading.get_ident()
    listing = _listing()
    debugger.message(
        f"{len(listing)} threads; the others keep running: `thread N` shows a snapshot of thread N's stack"
    )
    for number, (ident, thread, frame) in enumerate(listing, 1):
        if ident == threading.get_ident():
            frame, lineno, note = home[0][-1][0], home[0][-1][1], "  (this session's thread)"
        else:
            lineno, note = frame.f_lineno, ""
        name = thread.name if thread is not None else "(not a threading.Thread)"
        daemon = " daemon" if thread is not None and thread.daemon else ""
        mark = "*" if ident == viewed else " "
        debugger.message(
            f"{mark} {number} {name} ident {ident}{daemon} at "
            f"{os.path.basename(frame.f_code.co_filename)}:{lineno} in {frame.f_code.co_name}{note}"
        )


def command_thread(debugger, arg):
    """The debugger's ``thread [N]`` command: show thread N's stack, or the session's own.

    Sets the debugger's ``stack``, ``curindex``, ``curframe`` and
    ``curframe_locals`` as :meth:`pdb.Pdb.setup` does, then prints the frame
    as ``up`` does. A user mistake (no such thread) is one line.

    Args:
        debugger (pdb.Pdb): the session's debugger.
        arg (str): the thread's number in the ``threads`` listing, or empty.
    """
    home = _home(debugger)
    arg = arg.strip()
    if not arg:
        stack, index = home
        debugger.autodbg_viewed_thread = None
    else:
        listing = _listing()
        if not arg.isdigit() or not 1 <= int(arg) <= len(listing):
            debugger.error(
                f"no thread {arg}: type `threads` for their numbers (1 to {len(listing)})"
            )
            return
        ident, _, frame = listing[int(arg) - 1]
        if ident == threading.get_ident():
            stack, index = home
            debugger.autodbg_viewed_thread = None
        else:
            chosen = frames.program_frame(frame)
            stack = []
            while frame is not None:
                stack.append((frame, frame.f_lineno))
                frame = frame.f_back
            stack.reverse()
            index = next(i for i, (f, _) in enumerate(stack) if f is chosen)
            debugger.autodbg_viewed_thread = ident
    debugger.stack, debugger.curindex = list(stack), index
    debugger.curframe = stack[index][0]
    if not isinstance(getattr(type(debugger), "curframe_locals", None), property):
        debugger.curframe_locals = debugger.curframe.f_locals  # a property from 3.13 on
    debugger.lineno = None
    debugger.print_stack_entry(debugger.stack[debugger.curindex])


def _home(debugger):
    """Return the session's own ``(stack, curindex)``, kept at the first switch to another thread."""
    if getattr(debugger, "autodbg_viewed_thread", None) is None:
        debugger.autodbg_home_stack = (list(debugger.stack), debugger.curindex)
    return debugger.autodbg_home_stack


def _listing():
    """Return ``(ident, thread or None, innermost frame)`` per thread, in ``threading.enumerate`` order."""
    current = sys._current_frames()
    known = {thread.ident: thread for thread in threading.enumerate()}
    ordered = [ident for ident in known if ident in current]
    ordered += sorted(ident for ident in current if ident not in known)
    return [(ident, known.get(ident), current[ident]) for ident in ordered]
