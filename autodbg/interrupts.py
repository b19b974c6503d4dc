"""Signals during a session: a client's Ctrl-C, and a signal that ends the process.

A client's Ctrl-C while a debugger command runs must interrupt that command,
in the debugger's thread, as a terminal's SIGINT would (:func:`interrupt`).

A SIGTERM or SIGHUP while a session is open means that somebody wants the
process gone: ``timeout``, ``scancel``, a preemption, torchrun stopping its
workers, a closed SSH connection. It must end as it would without autodbg,
and the person at the prompt should learn why rather than see the connection
drop. So while a session runs in the main thread (where Python lets handlers
be set), :class:`EndOnSignal` holds those two signals: its handler tells the
client and stderr in one line, ends the session (terminal modes back, record
and socket removed), and hands the signal to what was there before, default
action included (the process then dies of that signal, as without autodbg).
A handler installed from C is left alone, since Python could not put it back:
one from before Python started (``signal.getsignal`` returns None), and one
installed since (torch's DataLoader workers' SIGTERM handler, which ends a
worker quietly when its parent stops it), which ``getsignal`` still reports
as ``SIG_DFL``: the kernel's ``SigCgt`` mask (:func:`autodbg.registry.catches`)
shows it.
"""

import os
import signal
import threading

ENDING = (signal.SIGTERM, signal.SIGHUP)


def interrupt(thread_ident):
    """Raise KeyboardInterrupt in the debugger's thread (a client's Ctrl-C during a command).

    Args:
        thread_ident (int): the thread that runs the debugger.
    """
    main = threading.main_thread().ident
    if thread_ident == main and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.pthread_kill(main, signal.SIGINT)  # also wakes a blocking system call
    else:
        import ctypes

        ctypes.pythonapi.PyThreadState_SetAsyncExc(
            ctypes.c_ulong(thread_ident), ctypes.py_object(KeyboardInterrupt)
        )


class EndOnSignal:
    """While installed, SIGTERM and SIGHUP end the session first, then act as before.

    Installed only in the main thread; elsewhere it does nothing.

    Args:
        end (Callable[[str], None]): told the signal's name; tells the client
            and ends the session. Must not block for long (it runs in a handler).
    """

    def __init__(self, end):
        self._end = end
        self._previous = {}

    def install(self):
        """Hold the signals (main thread only; those with a C handler are left alone)."""
        if threading.current_thread() is not threading.main_thread():
            return
        from autodbg import registry

        for signum in ENDING:
            previous = signal.getsignal(signum)
            if previous is None or (
                previous in (signal.SIG_DFL, signal.SIG_IGN) and registry.catches("self", signum)
            ):
                continue
            self._previous[signum] = previous
            signal.signal(signum, self._handle)

    def remove(self):
        """Put the handlers back as they were."""
        for signum, previous in self._previous.items():
            if signal.getsignal(signum) == self._handle:
                signal.signal(signum, previous)
        self._previous = {}

    def _handle(self, signum, frame):
        previous = self._previous.get(signum, signal.SIG_DFL)
        if previous == signal.SIG_IGN:
            return
        from autodbg import guard

        guard.call("the session's signal handler", self._end, signal.Signals(signum).name)
        self.remove()
        if callable(previous):
            return previous(signum, frame)
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
