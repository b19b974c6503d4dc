"""Session lifecycle: one session at a time per process.

A session is opened by an uncaught exception (post-mortem), a
``breakpoint()`` or the break signal, and goes: publish its record
(``opening``, :mod:`autodbg.publish`); write the crash record (post-mortem);
find a client (:mod:`autodbg.clients`: the terminal, or a socket client within
``AUTODBG_WAIT``); run the debugger; on a socket client's detach, wait again;
end, removing the record and the socket. A SIGTERM or SIGHUP meanwhile ends
it at once (:mod:`autodbg.interrupts`).

Two sessions never overlap. A second exception (another thread) waits for
its turn, and a daemon thread's session holds interpreter exit until it ends.
A ``breakpoint()`` reached from a debugger command of this thread (``p
helper()``) opens a nested prompt on the same client instead, as pdb's
``debug`` command does (:func:`set_trace`). A forked child starts with no
session, whatever the parent had open.
"""

import atexit
import os
import sys
import threading
import time
import traceback

from autodbg import config, frames, guard, identity, interrupts, registry
from autodbg.clients import Clients
from autodbg.messages import say
from autodbg.publish import Publication

_turn = threading.Lock()
_current = None


def post_mortem(exc, tb, thread=None, caught=None):
    """Open a post-mortem session of ``tb``; block until it ends.

    It opens at the frame of ``AUTODBG_FRAME`` (:func:`autodbg.frames.open_frame`):
    by default the innermost frame of the program's own code.

    Args:
        exc (BaseException): the uncaught exception, or one a catch wrapper caught.
        tb (types.TracebackType | None): its traceback.
        thread (threading.Thread | None): the thread it ended; None for the main thread.
        caught (str | None): ``module:qualname`` of the function whose call a
            catch wrapper holds (:mod:`autodbg.retry`): ``retry`` and ``return
            VALUE`` work in this session.

    Returns:
        tuple[str, object] | None: for a caught call, ``("retry", None)`` or
        ``("return", value)`` when the user chose so; None otherwise.
    """
    if tb is None:
        return None
    try:
        frame, lineno, below = frames.open_frame(tb, config.current().frame)
    except Exception as error:  # e.g. sysconfig unreadable by this user: open innermost
        say(f"cannot tell the program's frames ({error!r}); opening at the innermost frame")
        last = tb
        while last.tb_next is not None:
            last = last.tb_next
        frame, lineno, below = last.tb_frame, last.tb_lineno, 0
    if thread is not None and thread.daemon:
        atexit.register(_wait_for_sessions)
    session = Session(_one_line(exc), _where(frame, lineno), thread, _traceback_frames(tb))
    session.opened_at = (None, tb)
    session.opened_in = (frame, below)
    session.caught = caught
    try:
        with guard.inside("opening a debugger session"):
            if not session.open():
                return None
            from autodbg import crashes

            # Before any wait: the crash record outlives the process.
            session.clients.crash_record = crashes.record(session, exc, tb)
        if session.config.mode == "dap":
            from autodbg.backends import dap

            with guard.inside("in a DAP session"):
                if dap.post_mortem(session, session._publication, exc, tb):
                    return None  # else no debugpy (said): the usual session
        with guard.inside("opening a debugger session"):
            channel = session.channel = session.clients.first()
        if channel is not None:
            from autodbg import debugger

            session.debugger = debugger.create(
                session, channel, session.config.debugger, post_mortem=True
            )
            session.debugger.reset()
            if caught is not None:
                session.debugger.message(
                    f"autodbg: the call of {caught} is held: edit, `reload`, then `retry` calls "
                    "it again; `return VALUE` gives VALUE to its caller; `q` lets the exception go on"
                )
            session.debugger.interaction(None, tb)
    finally:
        session.close()
    return session.outcome


def set_trace(frame, intro=None, socket_only=False, in_call=False):
    """Open a session stopped at ``frame`` (``breakpoint()``); return once the debugger is set.

    The program then runs under the debugger until the user continues with no
    breakpoints left, quits, or the session ends without a client. From a
    debugger command of this thread's session, it runs a nested prompt at
    ``frame`` instead and returns when that prompt ends (``c`` or ``q``).

    Args:
        frame (types.FrameType): the frame to stop in.
        intro (str | None): shown to the client before the first prompt.
        socket_only (bool): never take the terminal (a live attach: the client
            that asked for it connects to the socket).
        in_call (bool): ``frame`` is in a call that goes on after the prompt
            (``torch.distributed.breakpoint()``'s caller, torch's barrier to
            come): the prompt opens at once at its current line, and ``n``
            stops at its next one.
    """
    current = _current
    if current is not None and current.thread_ident == threading.get_ident() and current.debugger:
        if guard.busy() == "at a debugger prompt":
            current.debugger.autodbg_nested(frame)
        else:
            current.debugger.set_trace(frame)  # a later breakpoint() of a breakpoint() session
        return
    if guard.busy() == "in a DAP session":  # reached from an expression the DAP client evaluates
        say("breakpoint() while this thread is stopped for a DAP client: ignored")
        return
    session = Session(None, _where(frame, frame.f_lineno), None, stack_frames(frame))
    session.opened_at = (frame, None)
    try:
        with guard.inside("opening a debugger session"):
            channel = session.channel = (
                session.clients.first() if session.open(socket_only) else None
            )
        if channel is None:
            session.close()
            return
        from autodbg import debugger

        session.debugger = debugger.create(
            session, channel, session.config.debugger, post_mortem=False
        )
        if intro:
            session.debugger.message(intro)
        if in_call:
            session.debugger.autodbg_stop_in_call(frame)
        else:
            session.debugger.set_trace(frame)
    except BaseException:
        session.close()
        raise


def current():
    """Return the open session of this process, or None."""
    return _current


def tell(text):
    """Say ``text`` as one ``autodbg:`` line on stderr and to the open session's client, if any.

    Args:
        text (str): one line, without the prefix.
    """
    say(text)
    session = _current
    if session is not None and session.clients is not None:
        session.clients.tell(f"autodbg: {text}")


def end_for_exit(why):
    """End another thread's open session because the program is ending (from the main thread).

    The main thread was stopped (a ``KeyboardInterrupt`` nobody caught: Ctrl-C,
    torchrun's SIGINT to its workers): without autodbg the process would exit
    now, so a session of a thread that failed earlier must not hold the exit.
    A session waiting for a client stops waiting; one at a prompt is
    interrupted and ends. Never blocks.

    Args:
        why (str): for the line on stderr and to the client.
    """
    session = _current
    if session is None or session.thread_ident == threading.get_ident() or session.clients is None:
        return
    tell(f"{why}: the program is ending; the debugger session of thread {session.thread_name} ends")
    session.clients.stop_waiting()
    if guard.busy(session.thread_ident) == "at a debugger prompt":
        session.interrupt()


def break_cancelled():
    """Tell (once) whether the CLI cancelled the break-in request this signal answers."""
    try:
        os.unlink(
            registry.break_cancel_path(registry.runtime_dir(config.current().dir), os.getpid())
        )
        return True
    except (OSError, registry.RuntimeDirError):
        return False


def _wait_for_sessions():
    with _turn:
        pass


def _forget_parent_session():
    # A forked child (multiprocessing's fork start method, DataLoader workers)
    # copies this module's state, but a session the parent has open is not the
    # child's: its turn may be held by a thread that does not exist here, so the
    # child's own session would wait for it forever; and the child's copies of
    # its descriptors would keep the client's connection and the terminal lock
    # alive after the parent lets them go.
    global _turn, _current
    inherited, _current, _turn = _current, None, threading.Lock()
    guard.forget_all()
    if inherited is not None:
        inherited.forget()


os.register_at_fork(after_in_child=_forget_parent_session)


def _one_line(exc):
    return traceback.format_exception_only(type(exc), exc)[-1].strip()


def _where(frame, lineno):
    return f"{frame.f_code.co_filename}:{lineno} in {frame.f_code.co_name}"


MAX_FRAMES = 100  # frames a record keeps, the innermost ones (faulthandler shows as many)


def _traceback_frames(tb):
    frames = []
    while tb is not None:
        frames.append(_frame_entry(tb.tb_frame, tb.tb_lineno))
        tb = tb.tb_next
    return frames


def stack_frames(frame):
    """Return the stack that ends at ``frame`` as a record lists it, without the debugger's frames.

    Args:
        frame (types.FrameType): where the debugger stopped.

    Returns:
        list[dict]: ``{"file", "line", "function"}`` per frame, outermost first,
        leaving out autodbg's, the debugger's and its prompt's frames
        (:func:`autodbg.debugger.is_machinery`: a nested prompt's stack
        passes through them).
    """
    from autodbg import debugger

    frames = []
    while frame is not None:
        if not debugger.is_machinery(frame):
            frames.append(_frame_entry(frame, frame.f_lineno))
        frame = frame.f_back
    return frames[::-1]


def _frame_entry(frame, lineno):
    return {"file": frame.f_code.co_filename, "line": lineno, "function": frame.f_code.co_name}


class _Record(Publication):
    """The session's record, which remembers its state so that a change of frames keeps it."""

    state = None
    server = None

    def publish(self, state, server=None):
        self.state, self.server = state, server
        super().publish(state, server)

    def update(self, fields):
        """Publish the record again with ``fields`` changed (nothing before its first publish)."""
        self._fields.update(fields)
        if self.state is not None:
            self.publish(self.state, self.server)


def _frame_fields(frames):
    # As a crash record keeps its frames (autodbg.crashes): the innermost, and how many it left out.
    return {"frames": frames[-MAX_FRAMES:], "frames_omitted": max(0, len(frames) - MAX_FRAMES)}


def _name(rank, role, pid):
    if rank is None:
        return f"pid {pid}"
    return f"rank {rank} / {role} (pid {pid})" if role else f"rank {rank}"


def _short(where):
    # ``file:line in function``, the file relative to the working directory when it is inside it.
    path, colon, rest = where.rpartition(":")
    try:
        relative = os.path.relpath(path)
    except ValueError:
        return where
    return where if relative.startswith("..") else f"{relative}{colon}{rest}"


class Session:
    """One debugging session of this process; created with the turn held.

    Args:
        exception (str | None): the exception as one line; None for ``breakpoint()``.
        where (str): ``file:line in function`` of the frame it stops in.
        thread (threading.Thread | None): the thread the exception ended.
        frames (list[dict]): the frames it debugs, outermost first, as
            :func:`stack_frames` lists them (``autodbg stack`` shows them).

    Blocks until no other session of this process is open.
    """

    def __init__(self, exception, where, thread, frames):
        global _current
        if _current is not None and _current.thread_ident == threading.get_ident():
            _current.close()  # a breakpoint() session of this thread that never ended
        if not _turn.acquire(blocking=False):
            say("another debugger session of this process is open; this one waits for it to end")
            _turn.acquire()
        _current = self
        self.config = config.current()
        self.identity = identity.current
        self.exception = exception
        self.where = where
        self.thread_name = None if thread is None else thread.name
        self.thread_ident = threading.get_ident()
        self.started = time.time()
        self.debugger = None
        # pdb's interaction(frame, traceback) arguments: where the debugger opens (autodbg.cast)
        self.opened_at = (None, None)
        # a post-mortem's frame of opened_at's traceback and the library frames below it
        self.opened_in = None
        self.caught = None  # a catch wrapper's function, module:qualname (autodbg.retry)
        self.outcome = None  # then what the user chose: ("retry", None) or ("return", value)
        self.clients = None
        self.channel = None  # the current client's, once there is one
        self.frames = frames
        self._console_named = False  # whether the terminal was told whose debugger it is
        self._named = set()  # the other sessions named on the terminal, (pid, started)
        self._publication = None
        self._signals = interrupts.EndOnSignal(self._end_on_signal)
        self._closed = False

    def open(self, socket_only=False):
        """Publish the record (``opening``) and get ready for clients; never blocks.

        Args:
            socket_only (bool): leave the terminal alone, whatever ``AUTODBG_MODE`` says.

        Returns:
            bool: False when the runtime directory is unusable (which is reported).
        """
        try:
            root = registry.runtime_dir(self.config.dir)
            folder = registry.job_dir(root, self.identity.job)
        except registry.RuntimeDirError as error:
            say(f"{error}; no debugger session")
            return False
        fields = {
            "exception": self.exception,
            "where": self.where,
            "started": self.started,
            "reason": "exception" if self.exception else "breakpoint",
            "thread": self.thread_name,
            # What `autodbg stack` shows for this thread instead of the prompt's frames.
            "thread_id": f"0x{self.thread_ident:016x}",  # as faulthandler prints it
            **_frame_fields(self.frames),
        }
        self._publication = _Record(os.path.join(folder, f"{os.getpid()}.json"), fields)
        # From now on the CLI sends this process no break signal.
        self._publication.publish("opening")
        from autodbg import ptrace

        ptrace.allow()  # py-spy, gdb -p under Yama scope 1; ctypes is cheap next to a session
        self.clients = Clients(
            self.config,
            root,
            folder,
            self._publication,
            socket_only,
            self.interrupt,
            self.exception or "breakpoint()",
            self.where,
        )
        self._signals.install()
        return True

    def stopped_at(self, frame):
        """Publish the stack that ends at ``frame``, where the debugger stopped (each stop)."""
        self.show_frames(stack_frames(frame))

    def show_frames(self, frames):
        """Publish ``frames`` (see :func:`stack_frames`) as the ones this session debugs now.

        For a ``breakpoint()`` session at each stop, and after a nested prompt.
        """
        if frames != self.frames and not self._closed and self._publication is not None:
            self.frames = frames
            self._publication.update(_frame_fields(frames))

    def took_terminal(self):
        """Note that the terminal is this session's client now; return the line that says so, or None.

        Publishes ``console: true`` in the record (a session that waited on its
        socket first still lists its socket there), by which torchrun's launcher
        knows the terminal's owner (:func:`autodbg.launcher._terminal_owner`).
        The line comes once, from a session of a rank (or of a process that
        waited for the terminal: another process had it), before its first
        prompt there: the terminal may have been another rank's a moment ago.
        """
        if self._console_named or self.clients is None:
            return None
        self._console_named = True
        self._publication.update({"console": True})
        waited = self.clients.server is not None  # it listened on its socket meanwhile
        if self.identity.rank is None and not waited:
            return None
        me = _name(self.identity.rank, self.identity.role, os.getpid())
        now = f"the terminal is free: it is {me}'s" if waited else f"this terminal is {me}'s"
        what = self.exception or "breakpoint()"
        return f"autodbg: {self.identity.label()}{what} at {_short(self.where)}; {now} debugger now"

    def others_line(self):
        """Return one line naming the job's other sessions open to a client, new ones only.

        A session on the terminal says it before each prompt: torchrun's
        launcher does not announce sessions while a worker's debugger has the
        terminal (:mod:`autodbg.launcher`), since its line would land in that
        prompt. Reads the runtime directory; never blocks.

        Returns:
            str | None: None when there is no session it has not named yet.
        """
        try:
            found = registry.sessions(registry.runtime_dir(self.config.dir))
        except registry.RuntimeDirError:
            return None
        others = [
            r
            for r in found
            if r.get("job") == self.identity.job
            and r["pid"] != os.getpid()
            and r.get("socket") is not None  # opening, or another terminal's: no attaching
            and not r.get("console")
            and (r["pid"], r.get("started")) not in self._named
        ]
        if not others:
            return None
        self._named.update((r["pid"], r.get("started")) for r in others)
        names = [_name(r.get("rank"), r.get("role"), r["pid"]) for r in others]
        if len(names) == 1:
            listed = f"{names[0]} is in a debugger session too"
        else:
            listed = f"{', '.join(names[:-1])} and {names[-1]} are in debugger sessions too"
        first = others[0]
        target = first["pid"] if first.get("rank") is None or first.get("role") else first["rank"]
        return f"autodbg: {listed}: autodbg attach {target}"

    def next_channel(self):
        """Detach the current socket client and wait for the next one.

        Returns:
            autodbg.backends.Channel | None: None when nobody came within ``AUTODBG_WAIT``.
        """
        with guard.inside("waiting for a debugger client"):
            self.channel = self.clients.next()
        return self.channel

    def interrupt(self):
        """Raise KeyboardInterrupt in the debugger's thread (a client's Ctrl-C during a command)."""
        interrupts.interrupt(self.thread_ident)

    def close(self):
        """End the session: drop the client, remove record and socket, free the terminal and the turn."""
        global _current
        if self._closed:
            return
        self._closed = True
        try:
            self._signals.remove()
            if self.clients is not None:
                self.clients.close()
            if self._publication is not None:
                self._publication.withdraw()
        finally:
            _current = None
            _turn.release()

    def forget(self):
        """In a forked child, let go of this session copied from the parent.

        Stops its debugger tracing this thread (a ``breakpoint()`` session that
        was stepping when the thread forked) and closes this process's copies
        of its descriptors. The record and the socket file stay: they are the
        parent's. :meth:`close` then does nothing.
        """
        self._closed = True
        if self.debugger is not None and getattr(sys.gettrace(), "__self__", None) is self.debugger:
            sys.settrace(None)
        self._signals.remove()
        if self.clients is not None:
            self.clients.forget()

    def _end_on_signal(self, name):
        line = f"{name}: this process is being stopped; its debugger session ends"
        say(line)
        if self.clients is not None:
            self.clients.tell(f"autodbg: {line}")
            if self.clients.console is not None:
                self.clients.console.restore_modes()
        self.close()
