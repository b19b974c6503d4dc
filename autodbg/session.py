"""Session lifecycle: one session at a time per process.

A session is opened by an uncaught exception (post-mortem) or a
``breakpoint()``, and goes: take the terminal, or publish a record and wait
(at most ``AUTODBG_WAIT`` seconds) for a client on the socket; run the
debugger; on a socket client's detach, wait again; end, removing the record
and the socket. A second exception (another thread) waits for its turn; a
daemon thread's session holds interpreter exit until it ends. A forked child
starts with no session, whatever the parent had open.
"""

import atexit
import os
import sys
import threading
import time
import traceback

from autodbg import config, identity, registry
from autodbg.backends import console as console_backend
from autodbg.backends import socket as socket_backend
from autodbg.messages import say

_turn = threading.Lock()
_current = None


def post_mortem(exc, tb, thread=None):
    """Open a post-mortem session at the innermost frame of ``tb``; block until it ends.

    Args:
        exc (BaseException): the uncaught exception.
        tb (types.TracebackType | None): its traceback.
        thread (threading.Thread | None): the thread it ended; None for the main thread.
    """
    if tb is None:
        return
    last = tb
    while last.tb_next is not None:
        last = last.tb_next
    if thread is not None and thread.daemon:
        atexit.register(_wait_for_sessions)
    session = Session(_one_line(exc), _where(last.tb_frame, last.tb_lineno), thread)
    try:
        from autodbg import crashes

        session.crash_record = crashes.record(session, exc, tb)  # before any wait: it outlives the process
        channel = session.first_channel()
        if channel is not None:
            from autodbg import debugger

            dbg = debugger.create(session, channel, session.config.debugger, post_mortem=True)
            dbg.reset()
            dbg.interaction(None, tb)
    finally:
        session.close()


def set_trace(frame, intro=None, socket_only=False):
    """Open a session stopped at ``frame`` (``breakpoint()``); return once the debugger is set.

    The program then runs under the debugger until the user continues with no
    breakpoints left, quits, or the session ends without a client.

    Args:
        frame (types.FrameType): the frame to stop in.
        intro (str | None): shown to the client before the first prompt.
        socket_only (bool): never take the terminal (a live attach: the client
            that asked for it connects to the socket).
    """
    current = _current
    if current is not None and current.thread_ident == threading.get_ident() and current.debugger:
        current.debugger.set_trace(frame)
        return
    session = Session(None, _where(frame, frame.f_lineno), None)
    try:
        channel = session.first_channel(socket_only)
        if channel is None:
            session.close()
            return
        from autodbg import debugger

        session.debugger = debugger.create(session, channel, session.config.debugger, post_mortem=False)
        if intro:
            session.debugger.message(intro)
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
    if session is not None:
        session.tell_client(f"autodbg: {text}")


def break_cancelled():
    """Tell (once) whether the CLI cancelled the break-in request this signal answers."""
    try:
        os.unlink(registry.break_cancel_path(registry.runtime_dir(config.current().dir), os.getpid()))
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
    if inherited is not None:
        inherited.forget()


os.register_at_fork(after_in_child=_forget_parent_session)


def _one_line(exc):
    return traceback.format_exception_only(type(exc), exc)[-1].strip()


def _where(frame, lineno):
    return f"{frame.f_code.co_filename}:{lineno} in {frame.f_code.co_name}"


class Session:
    """One debugging session of this process; created with the turn held.

    Args:
        exception (str | None): the exception as one line; None for ``breakpoint()``.
        where (str): ``file:line in function`` of the frame it stops in.
        thread (threading.Thread | None): the thread the exception ended.

    Blocks until no other session of this process is open.
    """

    def __init__(self, exception, where, thread):
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
        self.crash_record = None  # the path autodbg.crashes wrote for a post-mortem session
        self._server = None
        self._link = None
        self._console = None
        self._record_path = None
        self._publication = None
        self._refusing = None
        self._may_take_console = False
        self._closed = False

    def first_channel(self, socket_only=False):
        """Find the first client: the terminal, else a socket client within ``AUTODBG_WAIT``.

        Args:
            socket_only (bool): leave the terminal alone, whatever ``AUTODBG_MODE`` says.

        Returns:
            autodbg.backends.Channel | None: None when nobody came (or the runtime
            directory is unusable, which is reported).
        """
        cfg = self.config
        try:
            self._root = registry.runtime_dir(cfg.dir)
            folder = registry.job_dir(self._root, self.identity.job)
        except registry.RuntimeDirError as error:
            say(f"{error}; no debugger session")
            return None
        from autodbg import ptrace

        ptrace.allow()  # py-spy, gdb -p under Yama scope 1; ctypes is cheap next to a session
        self._record_path = os.path.join(folder, f"{os.getpid()}.json")
        has_terminal = console_backend.has_terminal()
        self._may_take_console = cfg.mode in ("auto", "console") and has_terminal and not socket_only
        if cfg.mode == "console" and not has_terminal:
            say("AUTODBG_MODE=console, but stdin/stdout is not a terminal; using a socket session")
        if self._may_take_console:
            self._console = console_backend.Console.claim(self._root)
            if self._console is not None:
                self._publish("attached")
                return self._console.channel()
        if cfg.wait <= 0:
            return None
        tcp_host = token = None
        if identity.multinode() and "torch.distributed" in sys.modules:
            # Other nodes reach the session through the job's store and TCP.
            import secrets

            tcp_host, token = cfg.listen, secrets.token_hex(16)
        try:
            self._server = socket_backend.Server(os.path.join(folder, f"{os.getpid()}.sock"), tcp_host, token)
        except OSError as error:
            say(f"cannot open the session's socket: {error.strerror or error}; no debugger session")
            return None
        self._publish("waiting")
        if cfg.launcher is None or cfg.launcher != os.getppid():  # else torchrun announces it
            what = self.exception or "breakpoint()"
            taken = "; the terminal is taken, this process takes it when it frees up" if self._may_take_console else ""
            say(
                f"{what} at {self.where}: waiting up to {cfg.wait:g} s for a debugger: "
                f"autodbg attach {self._target()}  (or: nc -U {self._server.path}){taken}"
            )
        return self._wait()

    def next_channel(self):
        """Detach the current socket client and wait for the next one.

        Returns:
            autodbg.backends.Channel | None: None when nobody came within ``AUTODBG_WAIT``.
        """
        self._drop_client(
            f"\r\nautodbg: detached; the session waits {self.config.wait:g} s for the next client "
            f"(autodbg attach {self._target()})\r\n"
        )
        self._publish("waiting")
        say(f"client detached; waiting up to {self.config.wait:g} s for the next one")
        return self._wait()

    def _wait(self):
        deadline = time.monotonic() + self.config.wait
        while True:
            if self._may_take_console:
                self._console = console_backend.Console.claim(self._root)
                if self._console is not None:
                    self._publish("attached")
                    return self._console.channel()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                kept = f" (crash record: autodbg show {os.getpid()})" if self.crash_record else ""
                say(f"no debugger attached within {self.config.wait:g} s (AUTODBG_WAIT); going on without one{kept}")
                return None
            conn = self._server.accept(min(remaining, 0.2) if self._may_take_console else remaining)
            if conn is None:
                continue
            self._link = socket_backend.open_link(conn, self.interrupt)
            self._publish("attached")
            stop = threading.Event()
            busy = f"busy: another client is attached to this session (pid {os.getpid()})"
            thread = threading.Thread(
                target=self._server.turn_away, args=(stop, busy), name="autodbg-busy", daemon=True
            )
            thread.start()
            self._refusing = (stop, thread)
            return self._link.channel

    def interrupt(self):
        """Raise KeyboardInterrupt in the debugger's thread (a client's Ctrl-C during a command)."""
        import signal

        main = threading.main_thread().ident
        if self.thread_ident == main and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            signal.pthread_kill(main, signal.SIGINT)  # also wakes a blocking system call
        else:
            import ctypes

            ctypes.pythonapi.PyThreadState_SetAsyncExc(
                ctypes.c_ulong(self.thread_ident), ctypes.py_object(KeyboardInterrupt)
            )

    def close(self):
        """End the session: drop the client, remove record and socket, free the terminal and the turn."""
        global _current
        if self._closed:
            return
        self._closed = True
        try:
            self._drop_client(None)
            if self._server is not None:
                self._server.close()
            if self._record_path is not None:
                registry.remove(self._record_path)
            if self._publication:
                self._withdraw()
            if self._console is not None:
                self._console.release()
                self._console = None
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
        for part in (self._server, self._link, self._console):
            if part is not None:
                part.forget()

    def tell_client(self, line):
        """Write ``line`` to the attached client, if there is one; never raises."""
        link = self._link
        if link is not None and not link.gone:
            try:
                link.channel.stdout.write(f"\r\n{line}\r\n")
                link.channel.stdout.flush()
            except (OSError, ValueError):
                pass

    def _drop_client(self, farewell):
        if self._refusing is not None:
            stop, thread = self._refusing
            stop.set()
            thread.join()  # it polls every 0.2 s; the next client must not meet it
            self._refusing = None
        if self._link is not None:
            if farewell and not self._link.gone:
                try:
                    self._link.channel.stdout.write(farewell)
                    self._link.channel.stdout.flush()
                except (OSError, ValueError):
                    pass
            self._link.close()
            self._link = None

    def _target(self):
        # A child shares its parent's rank: its pid names it alone.
        if self.identity.rank is None or self.identity.role is not None:
            return os.getpid()
        return self.identity.rank

    def _publish(self, state):
        ident = self.identity
        record = {
            "pid": os.getpid(),
            **ident.fields(),
            "state": state,
            "socket": None if self._server is None else self._server.path,
            "exception": self.exception,
            "where": self.where,
            "started": self.started,
            "reason": "exception" if self.exception else "breakpoint",
            "thread": self.thread_name,
            "argv": list(sys.argv),
            "process_started": registry.process_started(os.getpid()),
            "tcp": None,
            "token": None,
        }
        tcp = None if self._server is None else self._server.tcp_address
        if tcp is not None:
            host = ident.host if tcp[0] in ("0.0.0.0", "::", "") else tcp[0]
            record.update(tcp=f"{host}:{tcp[1]}", token=self._server.token)
        try:
            registry.write(self._record_path, record)
        except OSError as error:
            say(f"cannot write the session record {self._record_path}: {error.strerror}")
        if tcp is not None:
            self._publish_in_store(record)

    def _publish_in_store(self, record):
        from autodbg import store

        if self._publication is False:
            return  # failed once, said so once
        try:
            if self._publication is None:
                self._publication = store.Publication(store.connect(identity.store_address()))
            self._publication.write(record)
        except Exception as error:  # the job's store is the job's: never fail the session for it
            say(f"cannot publish the session in the job's store ({error}); other nodes will not see it")
            self._publication = False

    def _withdraw(self):
        try:
            self._publication.withdraw()
        except Exception:
            pass  # the store went away with the job
