"""How a session gets its clients: the terminal, or socket clients within ``AUTODBG_WAIT``.

The terminal comes first when this process may use it (``AUTODBG_MODE``
auto or console, a terminal on stdin and stdout, the job in its foreground,
the terminal lock free: :mod:`autodbg.backends.console`). Otherwise the
session listens on its Unix socket (:mod:`autodbg.backends.socket`) and waits
at most ``AUTODBG_WAIT`` seconds, again after each detach; while it waits it
keeps trying the terminal, which another process of the job may free. While
a client is attached, a thread turns every other client away with one line.
With ``AUTODBG_LISTEN`` set (the TCP mode) the socket's server also listens
on TCP there, for clients on other hosts that hold the user's key.
With ``AUTODBG_MODE=web`` the session serves a page instead of the socket
(:mod:`autodbg.backends.web`, on ``AUTODBG_LISTEN``'s address if set) and
waits for its first tab the same way.
"""

import io
import os
import sys
import threading
import time

from autodbg import guard, identity
from autodbg.backends import console as console_backend
from autodbg.backends import socket as socket_backend
from autodbg.messages import say

CONSOLE_POLL = 0.2  # seconds between tries of a taken terminal while waiting on the socket


def _store_host():
    address = identity.store_address()
    return None if address is None else address.rpartition(":")[0]


class Clients:
    """The clients of one session.

    Args:
        cfg (autodbg.config.Config): the settings.
        root (str): the runtime directory (the terminal lock lives there).
        folder (str): the job's folder (the socket lives there).
        publication (autodbg.publish.Publication): the session's record, updated
            with the state (``waiting``, ``attached``).
        socket_only (bool): leave the terminal alone, whatever ``AUTODBG_MODE`` says.
        interrupt (Callable[[], None]): a client's Ctrl-C during a command.
        what (str): the session's exception line or ``breakpoint()``, for the waiting line.
        where (str): ``file:line in function``, for the waiting line.
    """

    def __init__(self, cfg, root, folder, publication, socket_only, interrupt, what, where):
        self._cfg = cfg
        self._root = root
        self._folder = folder
        self._publication = publication
        self._interrupt = interrupt
        self._what = what
        self._where = where
        has_terminal = console_backend.has_terminal()
        self._may_take_console = (
            cfg.mode in ("auto", "console") and has_terminal and not socket_only
        )
        if cfg.mode == "console" and not has_terminal:
            say("AUTODBG_MODE=console, but stdin/stdout is not a terminal; using a socket session")
        self.server = None
        self.web = None  # the page's server, in web mode
        self.console = None
        self._link = None
        self._refusing = None
        self._wake_r, self._wake_w = os.pipe()
        self.ending = False  # the program is ending: no more waiting (:meth:`stop_waiting`)
        self.crash_record = None

    def first(self):
        """Find the first client: the terminal, else a socket client within ``AUTODBG_WAIT``.

        Blocks up to ``AUTODBG_WAIT`` seconds (a console session: not at all).

        Returns:
            autodbg.backends.Channel | None: None when nobody came (or the socket
            cannot be opened, which is reported).
        """
        channel = self._try_console()
        if channel is not None or self._cfg.wait <= 0:
            return channel
        if self._cfg.mode == "web":
            return self._open_web()
        try:
            self.server = socket_backend.Server(os.path.join(self._folder, f"{os.getpid()}.sock"))
        except OSError as error:
            say(f"cannot open the session's socket: {error.strerror or error}; no debugger session")
            return None
        if self._cfg.listen is not None:
            self._listen_tcp(self._cfg.listen)
        self._publication.publish("waiting", self.server)
        if (
            self._cfg.launcher is None or self._cfg.launcher != os.getppid()
        ):  # else torchrun announces it
            say(
                f"{self._what} at {self._where}: waiting up to {self._cfg.wait:g} s for a debugger: "
                f"autodbg attach {self.target()}  (or: nc -U {self.server.path}){self._why_not_console()}"
            )
        return self._wait()

    def next(self):
        """Detach the current socket client and wait for the next one (up to ``AUTODBG_WAIT``).

        Returns:
            autodbg.backends.Channel | None: None when nobody came in time.
        """
        if self.web is not None:
            self._publication.publish("waiting")
            say(
                f"the session's last page closed; waiting up to {self._cfg.wait:g} s for it "
                f"to be opened again: {self.web.url}"
            )
            return self._wait()
        self._drop_client(
            f"\r\nautodbg: detached; the session waits {self._cfg.wait:g} s for the next client "
            f"(autodbg attach {self.target()})\r\n"
        )
        self._publication.publish("waiting", self.server)
        say(f"client detached; waiting up to {self._cfg.wait:g} s for the next one")
        return self._wait()

    def tell(self, line):
        """Write ``line`` to the attached socket client, if there is one; never raises."""
        link = self._link
        if link is not None and not link.gone:
            text = f"\r\n{line}\r\n"
            stdout = link.channel.stdout
            try:
                stdout.write(text)
                stdout.flush()
            except RuntimeError:
                # From a signal handler that interrupted a write to the same file
                # ("reentrant call inside BufferedWriter"): past the file's buffer.
                try:
                    os.write(stdout.fileno(), text.encode("utf-8", "replace"))
                except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
                    pass
            except (OSError, ValueError):
                pass

    def client_gone(self):
        """Tell whether the attached socket client has vanished."""
        link = self._link
        return link is not None and link.gone

    def stop_waiting(self):
        """End a wait for a client now, and any later one (from another thread; never blocks)."""
        self.ending = True
        try:
            os.write(self._wake_w, b"!")
        except (OSError, TypeError):
            pass  # the session closed meanwhile

    def target(self):
        """Return what ``autodbg attach`` takes to reach this session: the rank, else the pid."""
        ident = identity.current
        # A child shares its parent's rank: its pid names it alone.
        if ident.rank is None or ident.role is not None:
            return os.getpid()
        return ident.rank

    def close(self):
        """Drop the client, close the socket (removing its file), free the terminal."""
        self._drop_client(None)
        if self.server is not None:
            self.server.close()
        if self.web is not None:
            self.web.close()
        if self.console is not None:
            self.console.release()
            self.console = None
        for fd in (self._wake_r, self._wake_w):
            os.close(fd)
        self._wake_r = self._wake_w = None

    def forget(self):
        """In a forked child, close this process's copies of the descriptors; leave the files."""
        for part in (self.server, self._link, self.console, self.web):
            if part is not None:
                part.forget()
        for fd in (self._wake_r, self._wake_w):
            if fd is not None:
                os.close(fd)

    def _listen_tcp(self, address):
        """Also listen on TCP at ``address`` (``AUTODBG_LISTEN``), or say in one line why not.

        A loopback address is refused in a job of several hosts: the others
        cannot reach it, and on theirs a client would find whatever listens on
        its own loopback. A job whose store is on a loopback address
        (``MASTER_ADDR``) has every node on this host, as its nodes reached
        the store there: loopback is what they all reach.
        """
        from autodbg import keys
        from autodbg.transport import loopback

        if loopback(address) and identity.multinode() and not loopback(_store_host()):
            say(
                f"AUTODBG_LISTEN={address} is a loopback address, which the other hosts of this "
                "job cannot reach: no TCP listener (set AUTODBG_LISTEN to 0.0.0.0 or to an "
                "address of this host that they reach)"
            )
            return
        try:
            key = keys.load(self._cfg.key_file, create=True)
        except keys.KeyFileError as error:
            say(f"{error}; no TCP listener (AUTODBG_LISTEN), the Unix socket works")
            return
        try:
            self.server.listen_tcp(address, key)
        except OSError as error:
            say(
                f"cannot listen on TCP at {address} (AUTODBG_LISTEN): "
                f"{error.strerror or error}; the Unix socket works"
            )

    def _open_web(self):
        """Serve the session's page and wait for its first tab (``AUTODBG_WAIT``)."""
        try:
            from autodbg.backends import web
        except ImportError as error:
            say(f"AUTODBG_MODE=web needs the websockets package ({error}); no debugger session")
            return None
        host = self._cfg.listen or "127.0.0.1"
        try:
            self.web = web.Server(
                host,
                identity.current.host,
                os.path.join(self._folder, f"{os.getpid()}.web-token"),
                self._interrupt,
            )
        except OSError as error:
            say(
                f"cannot serve the session's page on {host}: {error.strerror or error}; no debugger session"
            )
            return None
        if self.web.public:
            say(
                f"the page listens on {host} (AUTODBG_LISTEN): anyone who can reach that "
                "address may try it; the token keeps them out"
            )
        self._publication.update({"web": self.web.url})
        self._publication.publish("waiting")
        say(
            f"{self._what} at {self._where}: waiting up to {self._cfg.wait:g} s for a debugger: "
            f"open {self.web.url}?token={self.web.token}"
        )
        return self._wait()

    def _why_not_console(self):
        if self._may_take_console and console_backend.in_foreground(sys.__stdin__.fileno()):
            return "; the terminal is taken, this process takes it when it frees up"
        if self._may_take_console:
            return "; this job is in the background of its terminal"
        return ""

    def _try_console(self):
        if not self._may_take_console:
            return None
        self.console = console_backend.Console.claim(self._root)
        if self.console is None:
            return None
        self._publication.publish("attached", self.server)
        return self.console.channel()

    def _wait(self):
        deadline = time.monotonic() + self._cfg.wait
        with guard.inside("waiting for a debugger client"):
            while not self.ending:
                channel = self._try_console()
                if channel is not None:
                    return channel
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    kept = (
                        f" (crash record: autodbg show {os.getpid()})" if self.crash_record else ""
                    )
                    say(
                        f"no debugger attached within {self._cfg.wait:g} s (AUTODBG_WAIT); going on without one{kept}"
                    )
                    return None
                timeout = min(remaining, CONSOLE_POLL) if self._may_take_console else remaining
                conn = (self.web or self.server).accept(timeout, self._wake_r)
                if conn is not None:
                    return self._attach(conn)
        return None

    def _attach(self, conn):
        if self.web is not None:  # a tab: several may watch, none is turned away
            self._link = conn
            self._publication.publish("attached")
            return conn.channel
        self._link = socket_backend.open_link(conn, self._interrupt)
        self._publication.publish("attached", self.server)
        stop_r, stop_w = os.pipe()
        busy = (
            f"busy: another client is attached to this session (pid {os.getpid()}); "
            "try again when it detaches"
        )
        turn_away = guard.protect("the session's busy-client thread")(self.server.turn_away)
        thread = threading.Thread(
            target=turn_away, args=(stop_r, busy), name="autodbg-busy", daemon=True
        )
        thread.start()
        self._refusing = (stop_r, stop_w, thread)
        return self._link.channel

    def _drop_client(self, farewell):
        if self._refusing is not None:
            # The busy thread stops at once, before the client's connection closes: a
            # script's next `autodbg attach`, which may come right then, is not turned away.
            stop_r, stop_w, thread = self._refusing
            os.write(stop_w, b"!")
            if thread is not threading.current_thread():
                thread.join()
            os.close(stop_r)
            os.close(stop_w)
            self._refusing = None
        if self._link is not None:
            if farewell:
                self.tell(farewell.strip())
            self._link.close()
            self._link = None
