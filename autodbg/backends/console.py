"""The console backend: the debugger on the process's own terminal.

Several processes can share one terminal (torchrun's workers inherit it on
fd 0 without it being their controlling terminal); two readers would split
each other's keystrokes. So a process takes an exclusive ``flock`` on a lock
file named for the terminal device before reading it; the kernel releases
the lock if the holder dies, so a crashed owner never blocks the others
(tractor's tree-wide TTY lock, without a root process to hold it).
"""

import fcntl
import os
import signal
import sys
import termios
import threading

from autodbg import registry
from autodbg.backends import Channel


def has_terminal():
    """Tell whether this process's stdin and stdout are both terminals."""
    try:
        return os.isatty(sys.__stdin__.fileno()) and os.isatty(sys.__stdout__.fileno())
    except (AttributeError, ValueError, OSError):
        return False


class Console:
    """The terminal on stdin/stdout, owned by this process until :meth:`release`.

    Terminal modes are saved when it is claimed and restored on release, and
    also on SIGTERM or SIGHUP while it is owned (when the session runs in the
    main thread, where handlers can be set), since a worker killed at a
    readline prompt leaves the terminal without echo.
    """

    def __init__(self, lock_fd):
        self._lock_fd = lock_fd
        self._fd = sys.__stdin__.fileno()
        try:
            self._modes = termios.tcgetattr(self._fd)
        except termios.error:
            self._modes = None
        self._previous_handlers = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGHUP):
                self._previous_handlers[sig] = signal.signal(sig, self._on_fatal_signal)

    @classmethod
    def claim(cls, root):
        """Take the terminal if this process has one and nobody else holds it.

        Never blocks.

        Args:
            root (str): the runtime directory, which holds the lock file.

        Returns:
            Console | None: None when there is no terminal or it is taken.
        """
        if not has_terminal():
            return None
        path = registry.tty_lock_path(root, sys.__stdin__.fileno())
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return None
        return cls(fd)

    def channel(self):
        """Return the channel for the debugger: the process's original stdin and stdout."""
        return Channel("console", sys.__stdin__, sys.__stdout__)

    def release(self):
        """Restore terminal modes and signal handlers, then free the terminal."""
        self._restore_modes()
        for sig, handler in self._previous_handlers.items():
            signal.signal(sig, handler)
        self._previous_handlers = {}
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the last descriptor releases the flock
            self._lock_fd = None

    def forget(self):
        """In a forked child, drop this copy: handlers back, this process's lock descriptor closed.

        The terminal's modes are left alone: the parent still owns the terminal,
        and the lock is freed when its last descriptor, the parent's, is closed.
        """
        for sig, handler in self._previous_handlers.items():
            signal.signal(sig, handler)
        self._previous_handlers = {}
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _restore_modes(self):
        if self._modes is not None:
            try:
                termios.tcsetattr(self._fd, termios.TCSADRAIN, self._modes)
            except termios.error:
                pass

    def _on_fatal_signal(self, signum, frame):
        self._restore_modes()
        handler = self._previous_handlers.get(signum, signal.SIG_DFL)
        if handler == signal.SIG_IGN:
            return
        if callable(handler):
            return handler(signum, frame)
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
