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
"""

import os
import select
import socket
import struct
import termios
import threading

HANDSHAKE = b"AUTODBG-ATTACH/1"
READY = b"AUTODBG-READY\n"
TOKEN = b"AUTODBG-TOKEN"  # first line of a TCP client: AUTODBG-TOKEN <the session's token>
HANDSHAKE_WAIT = 0.3  # seconds; ``autodbg attach`` sends its line right after connecting
MAX_PATH = 107  # bytes in sockaddr_un.sun_path, less the terminating NUL
# Sent to the pty when the client vanishes: end-of-line, kill-line, end-of-file,
# which ends the prompt with EOF both in prompt_toolkit (emacs keys) and in a
# cooked-mode readline, so the debugger learns that its client left.
_DETACH_KEYS = b"\x05\x15\x04"


class Server:
    """A listening Unix socket at ``path``, mode 0600; and a TCP listener when asked.

    The TCP listener is for clients on other nodes (found through the job's
    store); with no peer credentials to check, a client must send the
    session's token first, compared in constant time.

    Args:
        path (str): the socket's path (at most :data:`MAX_PATH` bytes).
        tcp_host (str | None): address to listen on with TCP (port chosen by
            the kernel), or None for no TCP listener.
        token (str | None): the secret a TCP client must send.

    Raises:
        OSError: a socket cannot be created; ``ENAMETOOLONG`` names the fix.
    """

    def __init__(self, path, tcp_host=None, token=None):
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
        self._sock.listen(8)
        self._tcp = None
        self.tcp_address = None
        self.token = token
        if tcp_host is not None:
            self._tcp = socket.create_server((tcp_host, 0))
            self.tcp_address = (tcp_host, self._tcp.getsockname()[1])

    def accept(self, timeout, wake=None):
        """Wait up to ``timeout`` seconds for a client of this user.

        Args:
            timeout (float): seconds to wait; blocks at most that long.
            wake (int | None): a descriptor that, once readable, ends the wait early.

        Returns:
            socket.socket | None: the connection, or None on time-out, on
            ``wake``, or when the client was refused (another uid; it is told why).
        """
        listeners = [self._sock] if self._tcp is None else [self._sock, self._tcp]
        ready, _, _ = select.select(
            listeners + ([] if wake is None else [wake]), [], [], max(timeout, 0)
        )
        if not ready or wake in ready:
            return None
        if self._tcp in ready:
            conn, _ = self._tcp.accept()
            return conn if self._token_matches(conn) else None
        conn, _ = self._sock.accept()
        uid = peer_uid(conn)
        if uid != os.getuid():
            from autodbg.messages import say

            say(f"refused a client of uid {uid} on {self.path} (only uid {os.getuid()} may attach)")
            refuse(conn, f"refused: uid {uid} may not attach to a session of uid {os.getuid()}")
            return None
        return conn

    def turn_away(self, stop, message):
        """Refuse every client with ``message`` until ``stop`` is set (run in a thread).

        Args:
            stop (threading.Event): ends the loop; checked every 0.2 s.
            message (str): the one line the refused clients get.
        """
        while not stop.is_set():
            try:
                conn = self.accept(0.2)
            except OSError:
                return
            if conn is not None:
                refuse(conn, message)

    def _token_matches(self, conn):
        import hmac

        line = b""
        conn.settimeout(HANDSHAKE_WAIT * 10)
        try:
            while not line.endswith(b"\n") and len(line) < 256:
                byte = conn.recv(1)  # byte by byte: what follows the line is the client's
                if not byte:
                    break
                line += byte
        except OSError:
            pass
        conn.settimeout(None)
        expected = TOKEN + b" " + (self.token or "").encode() + b"\n"
        if hmac.compare_digest(line, expected):
            return True
        refuse(conn, "refused: wrong token")
        return False

    def close(self):
        """Stop listening and remove the socket file."""
        self._sock.close()
        if self._tcp is not None:
            self._tcp.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

    def forget(self):
        """Close this process's copy of the socket but leave the file (in a forked child)."""
        self._sock.close()
        if self._tcp is not None:
            self._tcp.close()  # else the child's copy would still take TCP connections


def peer_uid(conn):
    """Return the uid of the process at the other end of a Unix socket (``SO_PEERCRED``)."""
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", creds)[1]


def refuse(conn, message):
    """Send ``autodbg: <message>`` as one line and close the connection."""
    try:
        conn.sendall(f"autodbg: {message}\n".encode(), socket.MSG_NOSIGNAL)
    except OSError:
        pass
    conn.close()


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
    try:
        return max(1, int(fields[index]))
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
        self._stop = threading.Event()
        self.gone = False
        self.channel = Channel("line", self, self)
        watch = guard.protect("the line client's watcher")(self._watch)
        threading.Thread(target=watch, name="autodbg-line-watch", daemon=True).start()

    encoding = "utf-8"

    def readline(self):
        """Return the next line, or ``""`` when the client has left. Blocks until one arrives."""
        self._reading = True
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
                    if not self._reading:
                        self._interrupt()
                return

    def write(self, text):
        """Send ``text``; a client that left makes it a no-op. Returns len(text)."""
        if not self.gone:
            try:
                self._conn.sendall(text.encode("utf-8", "replace"), socket.MSG_NOSIGNAL)
            except OSError:
                self.gone = True
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
        self._stop = threading.Event()
        if pending:
            os.write(self._master, pending)
        from autodbg import guard

        relay = guard.protect("the pty relay")(self._relay)
        self._thread = threading.Thread(target=relay, name="autodbg-pty-relay", daemon=True)
        self._thread.start()

    def _relay(self):
        try:
            while not self._stop.is_set():
                watch = [self._master] if self.gone else [self._conn, self._master]
                ready, _, _ = select.select(watch, [], [], 0.2)
                if self._conn in ready:
                    self._from_client()
                if self._master in ready:
                    self._to_client(os.read(self._master, 65536))
            while select.select([self._master], [], [], 0)[0]:
                self._to_client(os.read(self._master, 65536))
        except OSError:
            pass

    def _from_client(self):
        try:
            data = self._conn.recv(65536)
        except OSError:
            data = b""
        if not data:
            self.gone = True
            if termios.tcgetattr(self._slave)[3] & termios.ISIG:
                # Cooked mode: a command runs (or pdb's plain readline waits).
                # Interrupt it, as LineLink does: nobody is left to see it, and
                # the debugger then finds its client gone. Keys typed now would
                # be lost when the next prompt puts the pty in raw mode.
                self._interrupt()
            else:
                os.write(self._master, _DETACH_KEYS)
            return
        if b"\x03" in data and termios.tcgetattr(self._slave)[3] & termios.ISIG:
            # Cooked mode: a command is running, not the prompt; a terminal would
            # send SIGINT to its foreground job, which is the debugger's thread.
            data = data.replace(b"\x03", b"")
            self._interrupt()
        if data:
            os.write(self._master, data)

    def _to_client(self, data):
        if not self.gone:
            try:
                self._conn.sendall(data, socket.MSG_NOSIGNAL)
            except OSError:
                self.gone = True
                os.write(self._master, _DETACH_KEYS)

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
        except (OSError, ValueError):
            pass
        self._stop.set()
        self._thread.join(2)
        for stream in (self.channel.stdin, self.channel.stdout):
            try:
                stream.close()
            except (OSError, ValueError):
                pass
        for fd in (self._master, self._slave):
            try:
                os.close(fd)
            except OSError:
                pass
        self._conn.close()
