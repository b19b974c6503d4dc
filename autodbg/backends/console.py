"""The console backend: the debugger on the process's own terminal.

Several processes can share one terminal (torchrun's workers inherit it on
fd 0 without it being their controlling terminal); two readers would split
each other's keystrokes. So a process takes an exclusive ``flock`` on a lock
file named for the terminal device before reading it; the kernel releases
the lock if the holder dies, so a crashed owner never blocks the others
(tractor's tree-wide TTY lock, without a root process to hold it).

A process takes the terminal only while its job is in the terminal's
foreground process group (DESIGN.md, contract 9): a background job of an
interactive shell (``prog &``) that touched the terminal's modes would be
stopped by SIGTTOU and never end, and one that read it would steal the
shell's input. A torchrun worker runs in a session of its own, where the
terminal is not its controlling terminal and ``tcgetpgrp`` fails, so the
question goes to the nearest ancestor whose controlling terminal it is
(torchrun): whether that ancestor's process group is the foreground one.
"""

import contextlib
import fcntl
import os
import sys
import termios

from autodbg import registry
from autodbg.backends import Channel


def has_terminal():
    """Tell whether this process's stdin and stdout are both terminals."""
    try:
        return os.isatty(sys.__stdin__.fileno()) and os.isatty(sys.__stdout__.fileno())
    except (AttributeError, ValueError, OSError):
        return False


def in_foreground(fd=0):
    """Tell whether this process's job is in the foreground of the terminal open on ``fd``.

    Reads ``/proc/<pid>/stat`` of ancestors when the terminal is not this
    process's controlling terminal; never blocks.

    Args:
        fd (int): a descriptor open on the terminal.

    Returns:
        bool: False also when nobody's controlling terminal it is (then no
        shell's job control decides who reads it, and no process may).
    """
    try:
        return os.tcgetpgrp(fd) == os.getpgrp()
    except OSError:
        pass
    try:
        device = os.fstat(fd).st_rdev
    except OSError:
        return False
    pid = os.getppid()
    while pid > 1:
        try:
            with open(f"/proc/{pid}/stat", "rb") as stat:
                # pid (comm) state ppid pgrp session tty_nr tpgid ...; comm may hold spaces
                fields = stat.read().rpartition(b")")[2].split()
        except OSError:
            return False
        ppid, pgrp, tty_nr, tpgid = int(fields[1]), int(fields[2]), int(fields[4]), int(fields[5])
        if tty_nr == device:
            return pgrp == tpgid
        pid = ppid
    return False


def _lock(root):
    """Take the terminal lock without blocking: ``(fd, path)``, or None when it is taken."""
    path = registry.tty_lock_path(root, sys.__stdin__.fileno())
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        # The holder removes the file before it lets go (no file is left
        # behind): a lock taken on a file that was removed meanwhile is no lock.
        if os.stat(path).st_ino != os.fstat(fd).st_ino:
            raise OSError("the lock file was replaced")
    except OSError:
        os.close(fd)
        return None
    return fd, path


@contextlib.contextmanager
def between_prompts(root):
    """Keep the terminal's debuggers from drawing a prompt while the caller prints a line.

    For a process that prints on a terminal its children's debuggers may read
    (torchrun's launcher): it holds the terminal lock for the time of the
    print, so that no session takes the terminal and draws its prompt
    meanwhile. Never blocks, and leaves the terminal's modes alone.

    Args:
        root (str): the runtime directory, which holds the lock file.

    Yields:
        bool: True when the caller may print now (the lock is held, or no
        debugger may read this terminal: none on stdin and stdout, or this job
        is in the background); False when a session has the terminal.
    """
    if not has_terminal() or not in_foreground(sys.__stdin__.fileno()):
        yield True
        return
    lock = _lock(root)
    if lock is None:
        yield False
        return
    fd, path = lock
    try:
        yield True
    finally:
        registry.remove(path)
        os.close(fd)


class Console:
    """The terminal on stdin/stdout, owned by this process until :meth:`release`.

    Terminal modes are saved when it is claimed and restored on release (when
    the job is still in the foreground: else the terminal is not ours to set).
    """

    def __init__(self, lock_fd, lock_path):
        self._lock_fd = lock_fd
        self._lock_path = lock_path
        self._fd = sys.__stdin__.fileno()
        try:
            self._modes = termios.tcgetattr(self._fd)
        except termios.error:
            self._modes = None

    @classmethod
    def claim(cls, root):
        """Take the terminal if this process has one, its job is in the foreground, and nobody else holds it.

        Never blocks.

        Args:
            root (str): the runtime directory, which holds the lock file.

        Returns:
            Console | None: None when there is no terminal, it is not this job's
            now, or it is taken.
        """
        if not has_terminal() or not in_foreground(sys.__stdin__.fileno()):
            return None
        lock = _lock(root)
        return None if lock is None else cls(*lock)

    def channel(self):
        """Return the channel for the debugger: the process's original stdin and stdout."""
        return Channel("console", sys.__stdin__, sys.__stdout__)

    def restore_modes(self):
        """Put the terminal's modes back as they were when claimed, if the job is in the foreground."""
        if self._modes is not None and in_foreground(self._fd):
            try:
                termios.tcsetattr(self._fd, termios.TCSADRAIN, self._modes)
            except termios.error:
                pass

    def release(self):
        """Restore terminal modes, then free the terminal and remove the lock file."""
        self.restore_modes()
        if self._lock_fd is not None:
            registry.remove(self._lock_path)
        self.forget()

    def forget(self):
        """Close this process's lock descriptor without touching the terminal (also in a forked child).

        In a child the parent still owns the terminal, and the lock is freed when
        its last descriptor, the parent's, is closed.
        """
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the last descriptor releases the flock
            self._lock_fd = None
