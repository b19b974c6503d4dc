"""The socket backend: a session's Unix socket, served inside the debugged process.

One socket, two kinds of client, told apart by the first line:

* ``autodbg attach`` on a terminal sends ``AUTODBG-ATTACH/1 <rows> <cols> <TERM>`` at once.
  The server answers ``AUTODBG-READY`` and runs the debugger on a
  pseudo-terminal it allocates, relaying the pty's master side to the socket
  (madbg's design): IPython then has a real terminal, so line editing,
  history, completion and colours work, and a Ctrl-C typed while a command
  runs (the pty is in cooked mode, ``ISIG`` set) interrupts the debugger's
  thread instead of reaching the process.
* Anything else (``nc -U``, ``socat``), or silence for :data:`HANDSHAKE_WAIT`
  seconds, is a line client: prompts and output as text, one command a line.
  ``autodbg attach`` with its input not a terminal (a pipe, a script, ``-c``)
  sends ``AUTODBG-ATTACH/1 line`` and is answered ``AUTODBG-READY`` as a line
  client, so that it learns of a refusal as a terminal client does.

The server checks the peer's uid with ``SO_PEERCRED`` and refuses any other
user (manhole's ``check_credentials``), on top of the socket's 0600 mode and
the runtime directory's 0700.

In the TCP mode (``AUTODBG_LISTEN``, opt-in) the session also listens on
TCP, where no peer credentials exist: a TCP client and the session first
prove to each other that they hold the user's key (:mod:`autodbg.keys`)::

    client: AUTODBG-TCP/1 <client nonce, hex>
    server: AUTODBG-NONCE <server nonce, hex>
    client: AUTODBG-PROOF <HMAC(key, client | nonces), hex>
    server: AUTODBG-PROOF <HMAC(key, server | nonces), hex>   (or one refusal line)

and then the client goes on as on the Unix socket, every byte in frames
that carry an HMAC (:func:`autodbg.keys.seal`). Each TCP client is
authenticated on a thread of its own, bounded by :data:`AUTH_WAIT` seconds,
so that a client that sends nothing or garbage delays neither the session
nor the next client; the session meets only clients that passed.
"""

import collections
import os
import select
import socket
import struct
import termios
import threading
import time

HANDSHAKE = b"AUTODBG-ATTACH/1"
READY = b"AUTODBG-READY\n"
HANDSHAKE_WAIT = 0.3  # seconds; ``autodbg attach`` sends its line right after connecting
BACKLOG = 128  # connections the Unix socket queues before the session or its busy thread takes them
MAX_PATH = 107  # bytes in sockaddr_un.sun_path, less the terminating NUL
TCP_HELLO = b"AUTODBG-TCP/1"  # a TCP client's first line, with its nonce
TCP_NONCE = b"AUTODBG-NONCE"  # the server's answer, with its nonce
TCP_PROOF = b"AUTODBG-PROOF"  # each side's proof that it holds the key
AUTH_WAIT = 5.0  # seconds a TCP client has to authenticate
# Seconds a client may take none of the output, its socket's buffers full, before it
# is dropped: a client that connects and never reads would otherwise block the
# debugger's writes, and with them the session, for ever.
SEND_WAIT = 5.0
MAX_AUTHENTICATING = 8  # TCP clients authenticating at once; more are refused at once
# Sent to the pty when the client vanishes: end-of-line, kill-line, end-of-file,
# which ends the prompt with EOF both in prompt_toolkit (emacs keys) and in a
# cooked-mode readline, so the debugger learns that its client left.
_DETACH_KEYS = b"\x05\x15\x04"
MAX_KEYS = 65536  # bytes of a pty client's keys waiting for the debugger to read them


class Server:
    """A listening Unix socket at ``path``, mode 0600; and a TCP listener once asked.

    Args:
        path (str): the socket's path (at most :data:`MAX_PATH` bytes).

    Raises:
        OSError: the socket cannot be created; ``ENAMETOOLONG`` names the fix.
    """

    def __init__(self, path):
        if len(os.fsencode(path)) > MAX_PATH:
            raise OSError(
                36,
                f"socket path {path} is longer than {MAX_PATH} bytes; set AUTODBG_DIR to a shorter directory",
            )
        self.path = path
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.bind(path)
        os.chmod(path, 0o600)
        # Room for a burst of clients (a dashboard asking every session, scripts retrying):
        # with a backlog of 8, the 9th connect() of a client with a time-out failed at once
        # (EAGAIN), before the busy thread could tell it why.
        self._sock.listen(BACKLOG)
        self._tcp = None
        self.tcp_address = None
        self._key = None
        self._lock = threading.Lock()
        self._closed = False
        self._pending = set()  # TCP connections authenticating
        self._passed = collections.deque()  # TCP connections authenticated, for accept()
        self._passed_r = self._passed_w = self._stop_r = self._stop_w = None
        self._acceptor = None

    def listen_tcp(self, host, key):
        """Also listen on TCP at ``host`` (port chosen by the kernel), for clients holding ``key``.

        Starts the thread ``autodbg-tcp``, which accepts TCP clients and
        authenticates each on a thread of its own (:data:`AUTH_WAIT` seconds
        at most); :meth:`accept` then returns those that passed.

        Args:
            host (str): the address to listen on (``0.0.0.0``, ``::``, an interface's).
            key (bytes): the user's key (:func:`autodbg.keys.load`).

        Raises:
            OSError: the address cannot be listened on (not this host's, say).
        """
        from autodbg import guard

        host = host.removeprefix("[").removesuffix("]")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        dualstack = host == "::" and socket.has_dualstack_ipv6()
        self._tcp = socket.create_server((host, 0), family=family, dualstack_ipv6=dualstack)
        self.tcp_address = (host, self._tcp.getsockname()[1])
        self._key = key
        self._passed_r, self._passed_w = os.pipe()
        self._stop_r, self._stop_w = os.pipe()
        serve = guard.protect("the session's TCP listener")(self._serve_tcp)
        self._acceptor = threading.Thread(target=serve, name="autodbg-tcp", daemon=True)
        self._acceptor.start()

    def accept(self, timeout, wake=None):
        """Wait up to ``timeout`` seconds for a client of this user.

        Args:
            timeout (float): seconds to wait; blocks at most that long.
            wake (int | None): a descriptor that, once readable, ends the wait early.

        Returns:
            socket.socket | None: the connection (for a TCP client, which has
            authenticated already, the local end of its relay: :func:`autodbg.keys.seal`),
            or None on time-out, on ``wake``, or when the client was refused
            (another uid; it is told why).
        """
        listeners = [self._sock] if self._passed_r is None else [self._sock, self._passed_r]
        ready, _, _ = select.select(
            listeners + ([] if wake is None else [wake]), [], [], max(timeout, 0)
        )
        if not ready or wake in ready:
            return None
        if self._sock not in ready:
            os.read(self._passed_r, 1)  # one byte a connection
            with self._lock:
                return self._passed.popleft() if self._passed else None
        conn, _ = self._sock.accept()
        uid = peer_uid(conn)
        if uid != os.getuid():
            from autodbg.messages import refused

            refused(
                f"uid {uid}",
                f"refused a client of uid {uid} on {self.path} (only uid {os.getuid()} may attach)",
            )
            refuse(conn, f"refused: uid {uid} may not attach to a session of uid {os.getuid()}")
            return None
        return conn

    def turn_away(self, stop, message):
        """Refuse every client with ``message`` until ``stop`` is readable (run in a thread).

        Args:
            stop (int): a descriptor (a pipe's read end) that, once readable,
                ends the loop at once.
            message (str): the one line the refused clients get.
        """
        while True:
            try:
                conn = self.accept(3600, wake=stop)
            except OSError:
                return
            if conn is not None:
                refuse(conn, message)
            elif select.select([stop], [], [], 0)[0]:
                return

    def _serve_tcp(self):
        from autodbg import guard

        while True:
            ready, _, _ = select.select([self._tcp, self._stop_r], [], [])
            if self._stop_r in ready:
                return
            try:
                conn, peer = self._tcp.accept()
            except (BlockingIOError, ConnectionAbortedError):
                continue  # the client gave up between select and accept
            with self._lock:
                crowded = self._closed or len(self._pending) >= MAX_AUTHENTICATING
                if not crowded:
                    self._pending.add(conn)
            if crowded:
                refuse(conn, "refused: too many clients are authenticating at once; try again")
                continue
            check = guard.protect("the TCP client's authentication")(self._authenticate)
            threading.Thread(
                target=check, args=(conn, peer), name="autodbg-tcp-auth", daemon=True
            ).start()

    def _authenticate(self, conn, peer):
        sealed = None
        try:
            sealed = self._challenge(conn, f"{peer[0]}:{peer[1]}")
        finally:
            with self._lock:
                self._pending.discard(conn)
                taken = sealed is not None and not self._closed
                if taken:
                    self._passed.append(sealed)
                    os.write(self._passed_w, b"!")
            if sealed is None:
                conn.close()
            elif not taken:
                sealed.close()  # the relay then closes the connection

    def _challenge(self, conn, peer):
        from autodbg import keys
        from autodbg.messages import refused

        deadline = time.monotonic() + AUTH_WAIT
        hello = _read_line(conn, deadline)
        if hello is None:
            return None  # nothing came: a port scan, a client that gave up
        client_nonce = _field(hello, TCP_HELLO, keys.NONCE_BYTES)
        if client_nonce is None:
            refused(
                "tcp: not an autodbg client",
                f"refused a TCP client from {peer}: not an autodbg client",
            )
            refuse(conn, "refused: not an autodbg client; use `autodbg attach`")
            return None
        server_nonce = keys.nonce()
        try:
            conn.sendall(TCP_NONCE + b" " + server_nonce.hex().encode() + b"\n")
        except OSError:
            return None
        answer = _field(_read_line(conn, deadline) or b"", TCP_PROOF, 32)
        if answer is None or not keys.verify(
            self._key, "client", client_nonce, server_nonce, answer
        ):
            refused(
                "tcp: no proof",
                f"refused a TCP client from {peer}: it did not prove it holds the key",
            )
            refuse(
                conn,
                "refused: this client did not prove it holds the session's key "
                "(its AUTODBG_KEY_FILE must hold the same key as the session's)",
            )
            return None
        mine = keys.proof(self._key, "server", client_nonce, server_nonce)
        try:
            conn.sendall(TCP_PROOF + b" " + mine.hex().encode() + b"\n")
        except OSError:
            return None
        # The session drops a client that reads nothing, with its line, when its own
        # sends to the local end stall (the relay holds keys.RELAY_BUFFER bytes, then reads
        # no more); the relay's bound, twice that, ends the relay after that.
        return keys.seal(
            conn, "server", self._key, client_nonce, server_nonce, send_wait=2 * SEND_WAIT
        )

    def close(self):
        """Stop listening and remove the socket file; drop TCP clients not yet taken.

        Blocks at most 1 s, for the TCP listener's thread.
        """
        self._sock.close()
        if self._tcp is not None:
            with self._lock:
                self._closed = True
                passed, self._passed = list(self._passed), collections.deque()
            os.write(self._stop_w, b"!")
            self._acceptor.join(1)
            self._tcp.close()
            for conn in passed:
                conn.close()
            for fd in (self._passed_r, self._passed_w, self._stop_r, self._stop_w):
                os.close(fd)
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

    def forget(self):
        """Close this process's copy of the sockets but leave the file (in a forked child).

        The lock is left alone: a thread of the parent may have held it at the fork.
        """
        self._sock.close()
        if self._tcp is not None:
            # Else the child's copies would keep TCP clients connected, or take new ones.
            self._tcp.close()
            for conn in (*self._pending, *self._passed):
                conn.close()
            from autodbg import keys

            keys.forget()
            for fd in (self._passed_r, self._passed_w, self._stop_r, self._stop_w):
                os.close(fd)


def _read_line(conn, deadline, limit=200):
    """Read one line (without its newline) byte by byte before ``deadline`` (monotonic seconds).

    Byte by byte: what follows the line is not this reader's. Returns None
    when nothing came at all (end of file or time-out), else what came, whole
    line or not.
    """
    line = b""
    try:
        while len(line) < limit:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            conn.settimeout(remaining)
            byte = conn.recv(1)
            if not byte or byte == b"\n":
                break
            line += byte
    except OSError:
        pass
    finally:
        try:
            conn.settimeout(None)
        except OSError:
            pass
    return line or None


def _field(line, word, size):
    """Return the bytes that ``<word> <hex>`` carries, when ``line`` is that and holds ``size`` bytes."""
    fields = line.split()
    if len(fields) != 2 or fields[0] != word or len(fields[1]) != 2 * size:
        return None
    try:
        return bytes.fromhex(fields[1].decode("ascii"))
    except ValueError:
        return None


def peer_uid(conn):
    """Return the uid of the process at the other end of a Unix socket (``SO_PEERCRED``)."""
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", creds)[1]


def refuse(conn, message):
    """Send ``autodbg: <message>`` as one line and close the connection. Does not block."""
    try:
        conn.sendall(f"autodbg: {message}\n".encode(), socket.MSG_NOSIGNAL | socket.MSG_DONTWAIT)
        conn.shutdown(socket.SHUT_WR)
        # Drop what the client sent already (its handshake): a socket closed with unread
        # data ends the client's reading with ECONNRESET instead of an end of file after
        # the line (nc then prints an error; a script's read fails). Bounded: 64 KiB.
        for _ in range(16):
            if not conn.recv(4096, socket.MSG_DONTWAIT):
                break
    except OSError:
        pass
    conn.close()


def _send(conn, data):
    """Send all of ``data`` to a client; raise ``TimeoutError`` when it takes none for :data:`SEND_WAIT` s.

    Each send is non-blocking (``MSG_DONTWAIT``; the socket itself stays blocking
    for the reader of the other direction), so progress, however slow, keeps
    the client: only one that reads nothing at all is given up.

    Raises:
        OSError: the client is gone (``EPIPE``, ``ECONNRESET``) or took nothing in time.
    """
    view = memoryview(data)
    poller = select.poll()
    poller.register(conn.fileno(), select.POLLOUT)
    while view:
        try:
            view = view[conn.send(view, socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL) :]
        except BlockingIOError:
            if not poller.poll(SEND_WAIT * 1000):
                raise TimeoutError(f"the client took no output for {SEND_WAIT:g} s") from None


def _read(fd):
    """Read what a non-blocking descriptor has (at most 64 KiB); ``b""`` when it has nothing now."""
    try:
        return os.read(fd, 65536)
    except BlockingIOError:
        return b""


def _dropped(error):
    if isinstance(error, TimeoutError):
        from autodbg.messages import say

        say(f"dropped the socket client: {error}")


def open_link(conn, interrupt):
    """Read the client's first line and build the link for its kind.

    Blocks up to :data:`HANDSHAKE_WAIT` seconds.

    Args:
        conn (socket.socket): an accepted connection.
        interrupt (Callable[[], None]): interrupts the running debugger command:
            on a Ctrl-C typed while it runs (pty clients), or when the client
            vanishes while it runs (both kinds).

    Returns:
        PtyLink | LineLink: the link, whose ``channel`` the debugger uses.
    """
    data = b""
    while b"\n" not in data and len(data) < 512:
        ready, _, _ = select.select([conn], [], [], HANDSHAKE_WAIT)
        if not ready:
            break
        chunk = conn.recv(512)
        if not chunk:
            break
        data += chunk
        if not HANDSHAKE.startswith(data[: len(HANDSHAKE)]):
            break
    if data.startswith(HANDSHAKE + b" ") and b"\n" in data:
        line, rest = data.split(b"\n", 1)
        fields = line.decode("ascii", "replace").split()
        if fields[1:] == ["line"]:
            conn.sendall(READY, socket.MSG_NOSIGNAL)
            return LineLink(conn, rest, interrupt)
        rows, cols = _int(fields, 1, 24), _int(fields, 2, 80)
        term = fields[3] if len(fields) > 3 else "xterm"
        conn.sendall(READY, socket.MSG_NOSIGNAL)
        return PtyLink(conn, rows, cols, term, rest, interrupt)
    return LineLink(conn, data, interrupt)


def _int(fields, index, default):
    # A window size is an unsigned short (TIOCSWINSZ); a larger one would fail the link.
    try:
        return min(max(1, int(fields[index])), 0xFFFF)
    except (IndexError, ValueError):
        return default


class LineLink:
    """A line client (``nc -U``, ``socat``): the socket itself is the channel's stream.

    A thread watches for the client's hang-up (``POLLHUP``: its end is closed,
    not merely its sending side, as ``nc -N`` does after piped input). A client
    that vanishes while a debugger command runs interrupts that command, as a
    terminal's hang-up would stop its job: nobody is left to see its output,
    and the session can go on waiting for the next client.
    """

    def __init__(self, conn, pending, interrupt):
        from autodbg import guard
        from autodbg.backends import Channel

        self._conn = conn
        self._pending = pending
        self._interrupt = interrupt
        self._reading = False
        self._started = False  # the debugger has asked for a line: its commands may run
        self._stop = threading.Event()
        self.gone = False
        self.channel = Channel("line", self, self)
        watch = guard.protect("the line client's watcher")(self._watch)
        threading.Thread(target=watch, name="autodbg-line-watch", daemon=True).start()

    encoding = "utf-8"

    def readline(self):
        """Return the next line, or ``""`` when the client has left. Blocks until one arrives."""
        self._reading = self._started = True
        try:
            while b"\n" not in self._pending and not self.gone:
                try:
                    chunk = self._conn.recv(4096)
                except OSError:
                    chunk = b""
                if not chunk:
                    self.gone = True
                    break
                self._pending += chunk
        finally:
            self._reading = False
        line, sep, self._pending = self._pending.partition(b"\n")
        return (line + sep).decode("utf-8", "replace")

    def _watch(self):
        poller = select.poll()
        poller.register(self._conn.fileno(), 0)  # events 0: only POLLHUP, POLLERR, POLLNVAL
        while not self._stop.is_set():
            if poller.poll(200):
                if not self._stop.is_set() and not self.gone:
                    self.gone = True
                    # Only a command's run: before the debugger's first read, an
                    # interrupt would end the session that is opening for it.
                    if self._started and not self._reading:
                        self._interrupt()
                return

    def write(self, text):
        """Send ``text``; a client that left makes it a no-op. Returns len(text)."""
        if not self.gone:
            try:
                _send(self._conn, text.encode("utf-8", "replace"))
            except OSError as error:
                self.gone = True
                _dropped(error)
                if self._started and not self._reading:
                    # A command's output that nobody reads: stop the command, as
                    # when its client vanishes (the watcher); the session goes on.
                    self._interrupt()
        return len(text)

    def flush(self):
        pass

    def isatty(self):
        return False

    def close(self):
        """Stop the watcher and close the connection."""
        self._stop.set()
        self._conn.close()

    def forget(self):
        """Close this process's copy of the connection (a forked child's, see session)."""
        self._stop.set()
        self._conn.close()


class PtyLink:
    """An ``autodbg attach`` client: a server-side pty relayed to the socket by a thread."""

    def __init__(self, conn, rows, cols, term, pending, interrupt):
        import fcntl

        from autodbg.backends import Channel

        self._conn = conn
        self._interrupt = interrupt
        self._master, self._slave = os.openpty()
        fcntl.ioctl(self._slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        # The streams live as long as the link: close() closes them.
        text = {"encoding": "utf-8", "errors": "replace", "closefd": False}
        stdin = open(self._slave, **text)  # noqa: SIM115
        stdout = open(self._slave, "w", buffering=1, **text)  # noqa: SIM115
        self.channel = Channel("pty", stdin, stdout, term)
        self.gone = False
        self._spoke = False  # the debugger has written to its terminal: it has started
        self._stop = threading.Event()
        # Keys not yet taken by the pty: written only when it has room (see _relay).
        self._keys = pending
        from autodbg import guard

        relay = guard.protect("the pty relay")(self._relay)
        self._thread = threading.Thread(target=relay, name="autodbg-pty-relay", daemon=True)
        self._thread.start()

    def _relay(self):
        # The keys go to the pty only when it has room (the master is non-blocking):
        # a client typing or pasting faster than the debugger reads used to block this
        # thread in write(), and with it the debugger's output, which this thread
        # relays; the debugger then blocked writing it, and both waited for ever.
        os.set_blocking(self._master, False)
        try:
            while not self._stop.is_set():
                watch = [self._master] if self.gone else [self._conn, self._master]
                room = [self._master] if self._keys else []
                ready, writable, _ = select.select(watch, room, [], 0.2)
                if self._conn in ready:
                    self._from_client()
                data = _read(self._master) if self._master in ready else b""
                if data:
                    self._to_client(data)
                if writable:
                    self._type()
            while select.select([self._master], [], [], 0)[0]:
                data = _read(self._master)
                if not data:
                    break
                self._to_client(data)
        except OSError:
            pass

    def _type(self):
        try:
            self._keys = self._keys[os.write(self._master, self._keys[:4096]) :]
        except BlockingIOError:
            pass

    def _press(self, keys):
        # Beyond MAX_KEYS not taken, keys are dropped, as a terminal whose input
        # buffer is full drops them: the client is still read, so that its hang-up is seen.
        self._keys = (self._keys + keys)[:MAX_KEYS]

    def _from_client(self):
        try:
            data = self._conn.recv(65536)
        except OSError:
            data = b""
        if not data:
            self._vanished()
            return
        if b"\x03" in data and termios.tcgetattr(self._slave)[3] & termios.ISIG:
            # Cooked mode: a command is running, not the prompt; a terminal would
            # send SIGINT to its foreground job, which is the debugger's thread.
            data = data.replace(b"\x03", b"")
            self._interrupt()
        if data:
            self._press(data)

    def _vanished(self):
        self.gone = True
        if self._spoke and termios.tcgetattr(self._slave)[3] & termios.ISIG:
            # Cooked mode: a command runs (or pdb's plain readline waits).
            # Interrupt it, as LineLink does: nobody is left to see it, and
            # the debugger then finds its client gone. Keys typed now would
            # be lost when the next prompt puts the pty in raw mode.
            self._interrupt()
        else:
            self._keys = self._keys[: MAX_KEYS - len(_DETACH_KEYS)] + _DETACH_KEYS

    def _to_client(self, data):
        self._spoke = True
        if not self.gone:
            try:
                _send(self._conn, data)
            except OSError as error:
                _dropped(error)
                # A client that takes no output is as good as gone; a command
                # printing to it is interrupted (before, the relay, and with it
                # the debugger's writes to the pty, waited on it for ever).
                self._vanished()

    def forget(self):
        """Close this process's copy of the connection (a forked child's, see session).

        The pty stays open: flushing or closing its streams here would write the
        parent's buffered output a second time.
        """
        self._conn.close()

    def close(self):
        """Flush what the debugger wrote, stop the relay (at most 2 s) and close everything."""
        try:
            self.channel.stdout.flush()
        except (OSError, ValueError, RuntimeError):
            pass  # RuntimeError: a signal's handler ends the session in the middle of a write
        self._stop.set()
        self._thread.join(2)
        fds = [self._master, self._slave]
        for stream in (self.channel.stdin, self.channel.stdout):
            try:
                stream.close()
            except (OSError, ValueError):
                pass
            except RuntimeError:
                # Interrupted in its write, the stream still owns the pty's fd and
                # closes it when collected: closing it here could close a new file
                # that reuses the number.
                fds[1:] = []
        for fd in fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self._conn.close()
