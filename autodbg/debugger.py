"""The debugger: ipdb's class (IPython's ``TerminalPdb``) or ``pdb.Pdb``, with autodbg's loop.

autodbg's subclass changes two things and keeps every command of the base:

* the command loop reads from the session's current :class:`~autodbg.backends.Channel`:
  a prompt_toolkit prompt on a terminal or pty (ipdb), ``input()`` on the
  console (pdb, with readline), or one line at a time from a plain stream
  (``nc``/``socat``);
* end of input on a socket client (Ctrl-D, or the client died) detaches:
  the session waits for the next client, which carries on in the same frame;
  on the console, end of input quits, as in pdb;
* a ``breakpoint()`` reached by one of its own commands (``p helper()``)
  opens a nested prompt on the same client, ``(ipdb>)``, like the prompt of
  pdb's ``debug`` command; ``c`` or ``q`` there returns to the outer prompt
  (:meth:`_AutodbgMixin.autodbg_nested`);
* the prompt names the rank, ``[rank 1] ipdb> `` (as ``(rank-1-pdb)`` of
  ``torch.distributed.breakpoint``'s debugger), and on the terminal, which the
  ranks of a job share, the session says once whose debugger it is now
  (:meth:`autodbg.session.Session.took_terminal`) and, before each prompt,
  which other sessions of the job a client can attach to
  (:meth:`autodbg.session.Session.others_line`): lines printed by anyone else
  meanwhile would land inside the prompt;
* each stop publishes the stack it stopped in, for ``autodbg stack``
  (:meth:`autodbg.session.Session.stopped_at`).
"""

import contextlib
import os
import sys

from autodbg import guard, identity
from autodbg.messages import say


def create(session, channel, kind, post_mortem, nested=False):
    """Build a debugger bound to ``session`` and reading from ``channel``.

    Imports ipdb and IPython (about a second) or pdb.

    Args:
        session (autodbg.session.Session): gives the next channel on detach.
        channel (autodbg.backends.Channel): where the first client is.
        kind (str | None): ``ipdb``, ``pdb``, or None for ipdb when importable.
        post_mortem (bool): True for a post-mortem session, False for ``breakpoint()``.
        nested (bool): a nested prompt inside another debugger's command.

    Returns:
        pdb.Pdb: an instance of a subclass of the chosen debugger class.
    """
    base = None
    if kind in (None, "ipdb"):
        try:
            with _imports_allowed_at_shutdown():
                from ipdb.__main__ import _get_debugger_cls, get_context_from_config
                from IPython.terminal.debugger import TerminalPdb

            # ipdb's set-up (IPython's shell and configuration), but always the
            # prompt_toolkit debugger: ipdb picks a plain one when stdin is not a
            # terminal, and a later client may be a pty. The set-up initialises an
            # IPython application, which makes its crash handler sys.excepthook:
            # the program's (autodbg's) hook is put back.
            hook = sys.excepthook
            try:
                _get_debugger_cls()
            finally:
                sys.excepthook = hook
            base = TerminalPdb
            options = {"context": int(os.getenv("IPDB_CONTEXT_SIZE") or get_context_from_config())}
        except ImportError as error:
            if kind == "ipdb":
                say(f"AUTODBG_DEBUGGER=ipdb but ipdb cannot be imported ({error}); using pdb")
    if base is None:
        import pdb

        base = pdb.Pdb
        options = {}
    cls = type(f"Autodbg{base.__name__}", (_AutodbgMixin, base), {})
    if hasattr(base, "pt_init"):
        options["pt_session_options"] = _prompt_options(channel)
    debugger = cls(**options)
    debugger.prompt = identity.current.label() + debugger.prompt
    debugger.autodbg_session = session
    debugger.autodbg_post_mortem = post_mortem
    debugger.autodbg_nested_in = nested
    debugger.autodbg_kind = kind
    debugger.autodbg_bind(channel, prompt_ready=True)
    return debugger


@contextlib.contextmanager
def _imports_allowed_at_shutdown():
    # A thread that fails after the main thread finished runs its session while
    # threading._shutdown() waits for it. IPython then imports
    # concurrent.futures, whose import registers an exit hook and raises
    # "can't register atexit after shutdown". The session holds exit anyway,
    # so lift that flag (private, in threading since 3.9) for the imports.
    import threading

    shutting_down = getattr(threading, "_SHUTTING_DOWN", False)
    if shutting_down:
        threading._SHUTTING_DOWN = False
    try:
        yield
    finally:
        if shutting_down:
            threading._SHUTTING_DOWN = True


def _prompt_options(channel):
    if channel.kind not in ("console", "pty"):
        from prompt_toolkit.input import DummyInput
        from prompt_toolkit.output import DummyOutput

        return {"input": DummyInput(), "output": DummyOutput()}
    from prompt_toolkit.input import create_input
    from prompt_toolkit.output.vt100 import Vt100_Output

    term = channel.term or os.environ.get("TERM")
    return {
        "input": create_input(channel.stdin),
        "output": Vt100_Output.from_pty(channel.stdout, term=term),
    }


# Modules of the debugger's own machinery: a nested prompt's stack ends below them.
_MACHINERY = (
    "autodbg",
    "bdb",
    "pdb",
    "cmd",
    "IPython",
    "ipdb",
    "prompt_toolkit",
    "asyncio",
    "concurrent",
)


class _AutodbgMixin:
    autodbg_session = None
    autodbg_post_mortem = True
    autodbg_nested_in = False
    autodbg_kind = None
    _autodbg_channel = None
    _autodbg_interrupted = False  # an outside SIGINT ended the session
    _autodbg_theme = None  # IPython's colour theme, for clients on a terminal
    autodbg_viewed_thread = None  # the ident of the thread `thread N` shows; None: the session's
    autodbg_home_stack = None  # the session's own (stack, curindex) while another thread is shown

    def autodbg_bind(self, channel, prompt_ready=False):
        """Read commands from ``channel`` and write to it from now on.

        Args:
            channel (autodbg.backends.Channel): the new client.
            prompt_ready (bool): the prompt_toolkit session already uses it.
        """
        self._autodbg_channel = channel
        self.stdin = channel.stdin
        self.stdout = channel.stdout
        if hasattr(self, "set_theme_name"):
            # IPython's colours are terminal escapes: a line client (nc, a script) gets plain text.
            if self._autodbg_theme is None:
                self._autodbg_theme = self._theme_name
            self.set_theme_name("nocolor" if channel.kind == "line" else self._autodbg_theme)
        if hasattr(self, "pt_init") and not prompt_ready:
            self.pt_init(_prompt_options(channel))
        if channel.kind == "console":
            header = guard.call("the terminal's header line", self.autodbg_session.took_terminal)
            if header:
                self.message(header)

    def cmdloop(self, intro=None):
        if self.autodbg_session is None:
            # The recursive debugger of the `debug` command, made by IPython as
            # self.__class__(stdin=..., stdout=...): the base's loop on those.
            return super().cmdloop(intro)
        # cmd.Cmd.cmdloop's contract, with the line read from the current channel.
        self.preloop()
        stop = None
        while not stop:
            line = self.cmdqueue.pop(0) if self.cmdqueue else self._autodbg_read()
            line = self.precmd(line)
            stop = self.onecmd(line)
            stop = self.postcmd(stop, line)
        self.postloop()

    def _autodbg_read(self):
        try:
            return self._autodbg_read_line()
        except KeyboardInterrupt:
            clients = self.autodbg_session.clients
            if clients.client_gone():
                return "EOF"  # the interrupt of a command whose client vanished, come late
            if self._autodbg_channel.kind == "console" and not clients.ending:
                raise  # Ctrl-C typed at the terminal's prompt: pdb's --KeyboardInterrupt--
            if not clients.ending:
                # A socket client's Ctrl-C at the prompt is a key on its pty, never a
                # signal: this SIGINT came from outside (torchrun stopping its workers,
                # kill -INT). End as the signal would have ended the program.
                why = "SIGINT: this process is being stopped; its debugger session ends"
                say(why)
                clients.tell(f"autodbg: {why}")
            self._autodbg_interrupted = True
            return "q" if self.autodbg_post_mortem else "c"

    def _autodbg_read_line(self):
        if self.autodbg_session.clients.client_gone():
            return "EOF"
        if self._autodbg_channel is not self.autodbg_session.channel:
            # A nested prompt's client detached and another one came meanwhile.
            if self.autodbg_session.channel is None:
                return "EOF"
            self.autodbg_bind(self.autodbg_session.channel)
        channel = self._autodbg_channel
        if channel.kind == "console":
            others = guard.call(
                "the terminal's line of other sessions", self.autodbg_session.others_line
            )
            if others:
                self.message(others)
        if channel.kind != "line" and hasattr(self, "pt_app"):
            completer = self._ptcomp.ipy_completer
            completer.namespace = getattr(self, "_curframe_locals", self.curframe.f_locals)
            completer.global_namespace = self.curframe.f_globals
            try:
                if _loop_running():
                    # IPython's reason for its prompt thread: a loop cannot run inside a loop.
                    return self.thread_executor.submit(self._prompt).result()
                # Otherwise prompt here: no thread to start, which also works at shutdown.
                return self._prompt()
            except EOFError:
                return "EOF"
        if (
            channel.kind == "console"
            and channel.stdin is sys.stdin
            and channel.stdout is sys.stdout
        ):
            try:
                return input(self.prompt)
            except EOFError:
                return "EOF"
        self.stdout.write(self.prompt)
        self.stdout.flush()
        line = self.stdin.readline()
        return line.rstrip("\r\n") if line else "EOF"

    def do_reload(self, arg):
        """reload
        Apply the source files changed since they were imported to the live
        program: changed functions and methods get their new code in place
        (autodbg.reload)."""
        from autodbg import reload

        reload.command(self, arg)

    def do_tasks(self, arg):
        """tasks
        List the tasks of every running asyncio loop of the process, with
        the coroutines each is in and what it awaits (autodbg.tasks)."""
        from autodbg import tasks

        tasks.command(self, arg)

    def do_threads(self, arg):
        """threads
        List every thread of the process: number, name, ident, daemon, where
        it is; the others keep running (autodbg.threads)."""
        from autodbg import threads

        threads.command_threads(self, arg)

    def do_thread(self, arg):
        """thread [N]
        Show a snapshot of thread N's stack (N from `threads`); `thread`
        alone returns to the session's own stack (autodbg.threads)."""
        from autodbg import threads

        threads.command_thread(self, arg)

    def do_trace(self, arg):
        """trace [N]
        Show the last N (default 20) traced events of this thread
        (AUTODBG_TRACE; autodbg.trace)."""
        from autodbg import trace

        trace.command(self, arg)

    def do_retry(self, arg):
        """retry
        Call the function whose call failed again, with the same arguments
        (its new code after a `reload`); its value goes to its caller and the
        program goes on. Only for a function of AUTODBG_CATCH or
        @autodbg.catch (autodbg.retry)."""
        if not self._autodbg_holds_call():
            self.error(
                "retry: only a call of a function named in AUTODBG_CATCH, or decorated with "
                "@autodbg.catch, is held for a retry; this session's is not"
            )
            return None
        self.autodbg_session.outcome = ("retry", None)
        return 1

    def do_return(self, arg):
        """return VALUE
        In a session of an AUTODBG_CATCH or @autodbg.catch function: give
        VALUE (an expression of the current frame) to the failed call's
        caller, and the program goes on (autodbg.retry). Elsewhere, pdb's
        return: continue until the current function returns."""
        if not self._autodbg_holds_call():
            return super().do_return(arg)
        if not arg.strip():
            self.error("return VALUE: say what the call gives back, e.g. `return None`")
            return None
        try:
            value = self._getval(arg)  # prints the error itself
        except Exception:
            return None
        self.autodbg_session.outcome = ("return", value)
        return 1

    def _autodbg_holds_call(self):
        # A post-mortem of a catch wrapper (autodbg.retry), not a nested or breakpoint() prompt.
        session = self.autodbg_session
        return session is not None and session.caught is not None and self.autodbg_post_mortem

    def do_EOF(self, arg):
        """EOF (Ctrl-D): on the console, quit; on a socket, detach and let another client attach."""
        if self._autodbg_channel.kind == "console":
            return super().do_EOF(arg)
        channel = (
            None if self.autodbg_session.channel is None else self.autodbg_session.next_channel()
        )
        if channel is None:
            if not self.autodbg_post_mortem:
                self.set_continue()
            return 1
        self.autodbg_bind(channel)
        self.print_stack_entry(self.stack[self.curindex])
        return None

    def setup(self, f, tb):
        stop = super().setup(f, tb)
        self.autodbg_viewed_thread = None  # a new stop shows the session's own thread
        opened_in = self.autodbg_session and self.autodbg_session.opened_in
        if self.autodbg_post_mortem and opened_in and tb is not None:
            # Just my code (autodbg.frames.open_frame): pdb's setup picks the innermost frame.
            frame, below = opened_in
            self.autodbg_session.opened_in = None  # once: a later setup is the user's own
            for index, (candidate, _) in enumerate(self.stack):
                if candidate is frame:
                    self.curindex, self.curframe = index, frame
                    if not isinstance(getattr(type(self), "curframe_locals", None), property):
                        self.curframe_locals = frame.f_locals  # a property from 3.13 on
                    break
            if below:
                name = os.path.basename(frame.f_code.co_filename)
                self.message(
                    f"autodbg: opened at {name}:{self.stack[self.curindex][1]}, your code; {below} library "
                    f"frame{'s' if below != 1 else ''} below (down reaches them)"
                )
        return stop

    def interaction(self, frame, tb):
        if tb is None and frame is not None and self.autodbg_session is not None:
            guard.call("the publishing of a stop", self.autodbg_session.stopped_at, frame)
        with guard.inside("at a debugger prompt"):
            super().interaction(frame, tb)
        # After a breakpoint(), the session lasts while the debugger may stop again.
        ended = self.quitting or (self.stoplineno == -1 and not self.breaks)
        if (
            not self.autodbg_post_mortem
            and not self.autodbg_nested_in
            and (ended or self._autodbg_interrupted)
        ):
            self.autodbg_session.close()
        if self._autodbg_interrupted and not self.autodbg_post_mortem:
            self._autodbg_interrupted = False
            self.set_continue()
            raise KeyboardInterrupt  # into the program's frame, where the SIGINT would have landed

    def autodbg_stop_in_call(self, frame):
        """Prompt at once at ``frame``, whose current line is a call still running; then trace as asked.

        pdb's ``set_trace(frame)`` stops at the next line event, which for a
        frame in a call comes only once the call returns (and ``set_step``
        would stop in the callee's callees first). So this sets up what
        ``set_trace`` does (each frame's trace function, the bottom frame),
        runs the prompt here, outside any trace function, and then sets the
        trace function only if the command asked for another stop: ``n``
        stops at ``frame``'s next line, ``s`` at the next Python call; ``c``
        with no breakpoints and the session's end leave the program
        untraced; ``q`` raises ``bdb.BdbQuit`` into it, as pdb's does.

        Args:
            frame (types.FrameType): the frame to stop in, e.g. the one that
                called ``torch.distributed.breakpoint()``.
        """
        self.reset()
        bottom = frame
        while bottom is not None:
            bottom.f_trace = self.trace_dispatch
            self.botframe = bottom
            bottom = bottom.f_back
        self.interaction(frame, None)
        if self.quitting:
            import bdb

            raise bdb.BdbQuit  # as pdb's `q` at a breakpoint: into the program's frame
        if not (self.stoplineno == -1 and not self.breaks):
            sys.settrace(self.trace_dispatch)

    def autodbg_nested(self, frame):
        """Run a nested prompt at ``frame`` on this debugger's client; return when it ends.

        For a ``breakpoint()`` reached by one of this debugger's own commands.
        The program's code there runs inside this debugger's command (and, for
        a ``breakpoint()`` session, inside its trace function, where Python
        traces nothing), so the nested prompt inspects and does not step: ``c``,
        ``q``, ``n`` and ``s`` all return to the outer prompt once the command
        that reached the ``breakpoint()`` ends. The outer debugger's trace
        function, if any, is put back.

        Args:
            frame (types.FrameType): the frame that called ``breakpoint()``.
        """
        nested = create(
            self.autodbg_session,
            self._autodbg_channel,
            self.autodbg_kind,
            post_mortem=False,
            nested=True,
        )
        nested.prompt = f"({self.prompt.strip()}) "  # as IPython's `debug` makes it
        bottom = frame
        while bottom.f_back is not None and not is_machinery(bottom.f_back):
            bottom = bottom.f_back
        nested.botframe = bottom
        nested.message(
            f"autodbg: nested breakpoint() at {frame.f_code.co_filename}:{frame.f_lineno}, inside the "
            "outer prompt's command; `c` returns to the outer prompt"
        )
        tracer = sys.gettrace()
        frames = self.autodbg_session.frames
        try:
            nested.interaction(frame, None)
        finally:
            sys.settrace(tracer)
            guard.call("the publishing of a stop", self.autodbg_session.show_frames, frames)


def is_machinery(frame):
    """Tell whether ``frame`` runs code of autodbg, the debugger or its prompt (see ``_MACHINERY``).

    Args:
        frame (types.FrameType): any frame.
    """
    name = frame.f_globals.get("__name__") or ""
    return name.partition(".")[0] in _MACHINERY


def _loop_running():
    asyncio = sys.modules.get("asyncio")
    return asyncio is not None and asyncio._get_running_loop() is not None
