"""Which frames are the program's own code: where a session or ``autodbg cast`` looks first.

A rank blocked in ``dist.all_reduce`` has torch's frames on top of its stack;
the user asks about the frame of their own code that called it. "The
program's own code" is every file that is not Python's standard library, not
an installed package (``site-packages``, ``dist-packages``, the user site,
anything inside a virtual environment), not autodbg and not torch. So the
main script's directory, the working directory and an editable install of
the user's package (its sources stay in the user's checkout) all count, and a
virtual environment inside the checkout does not. ``<string>`` and
``<stdin>`` (``python -c``, code typed in) count too; ``<frozen ...>`` modules
do not.
"""

import functools
import os
import sys

_LIBRARY_DIRS = ("site-packages", "dist-packages")


@functools.cache
def _excluded():
    import site
    import sysconfig

    dirs = {sysconfig.get_paths()[key] for key in ("stdlib", "platstdlib", "purelib", "platlib")}
    dirs.update(site.getsitepackages() if hasattr(site, "getsitepackages") else ())
    dirs.add(site.getusersitepackages())
    if sys.prefix != sys.base_prefix:  # a virtual environment holds no code of the user's own
        dirs.add(sys.prefix)
    dirs.add(os.path.dirname(os.path.abspath(__file__)))  # autodbg
    torch = sys.modules.get("torch")
    if getattr(torch, "__file__", None):
        dirs.add(os.path.dirname(torch.__file__))  # a source build of torch is not the program
    return tuple(os.path.join(os.path.realpath(d), "") for d in dirs if d)


@functools.lru_cache(maxsize=1024)
def is_program(filename):
    """Tell whether ``filename`` (a code object's ``co_filename``) is the program's own code.

    Args:
        filename (str): a path, or a pseudo-name such as ``<string>``.

    Returns:
        bool: False for the standard library, installed packages, a virtual
        environment's files, autodbg, torch and ``<frozen ...>`` modules; True
        otherwise. Cached per name; touches the file system (``realpath``) once
        per name.
    """
    if filename.startswith("<"):
        return filename in ("<string>", "<stdin>")
    path = os.path.realpath(filename)
    if any(part in _LIBRARY_DIRS for part in path.split(os.sep)):
        return False
    return not path.startswith(_excluded())


def program_frame(frame):
    """Return the innermost frame of the program's own code at or above ``frame``.

    Walks ``f_back`` from ``frame`` (an innermost frame, such as a thread's
    current frame from :func:`sys._current_frames`) and returns the first whose
    file :func:`is_program`; ``frame`` itself when none is.

    Args:
        frame (types.FrameType): where to start.

    Returns:
        types.FrameType: the frame a session would open at.
    """
    current = frame
    while current is not None:
        if is_program(current.f_code.co_filename):
            return current
        current = current.f_back
    return frame


def open_frame(tb, choice="program"):
    """Return where a post-mortem session of ``tb`` opens and how many library frames lie below.

    "Just my code", as VS Code's debugger stops by default: the innermost frame
    of the program's own code (:func:`is_program`), so that an exception
    raised deep inside torch opens at the user's line that called it.

    Args:
        tb (types.TracebackType): the exception's traceback, not None.
        choice (str): ``program`` (the setting ``AUTODBG_FRAME``'s default) or
            ``innermost`` (pdb's frame, the traceback's last).

    Returns:
        tuple[types.FrameType, int, int]: the frame, its line (the
        traceback's), and the number of the traceback's frames below it (0 for
        ``innermost``, or when no frame is the program's: then the innermost).
    """
    entries = []
    while tb is not None:
        entries.append((tb.tb_frame, tb.tb_lineno))
        tb = tb.tb_next
    index = len(entries) - 1
    if choice == "program":
        for candidate in range(len(entries) - 1, -1, -1):
            if is_program(entries[candidate][0].f_code.co_filename):
                index = candidate
                break
    frame, lineno = entries[index]
    return frame, lineno, len(entries) - 1 - index
