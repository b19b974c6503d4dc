"""The ``autodbg attach`` client: this terminal, relayed to a session's socket.

It sends the handshake of :mod:`autodbg.backends.socket` (window size and
``TERM``), then puts this terminal in raw mode, so that every key, Ctrl-C and
Ctrl-D included, reaches the session's pty and IPython's prompt; the
terminal's modes are restored however the client ends.
"""

import os
import select
import socket
import sys
import termios
import tty

from autodbg.backends.socket import HANDSHAKE, READY, TOKEN


class AttachError(Exception):
    """The session could not be reached; the message is one line for the user."""


def attach(record, commands=None, ready_timeout=10.0):
    """Connect this terminal, or this process's input and output, to the session of ``record``.

    Uses the session's Unix socket when this machine has it, else its TCP
    listener with the session's token (a session of another node, found
    through the job's store). On a terminal, the session's full debugger
    (its pty, relayed); what was typed before the prompt showed is kept. With
    input that is not a terminal (a pipe, a script) or with ``commands``, a
    line client: each line is a debugger command, the output comes as plain
    text, and the client detaches when its input ends (the session then
    waits for the next client, unless a command ended it). Blocks until then,
    or until the session ends.

    Args:
        record (dict): the session record (``socket``; ``tcp`` and ``token``).
        commands (list[str] | None): debugger commands to run instead of
            reading input (``autodbg attach -c``).
        ready_timeout (float): seconds to wait for the session to answer.

    Raises:
        AttachError: the session cannot be reached, refused the client (busy,
            other uid, wrong token), or did not answer in time.
    """
    stdin, stdout = sys.stdin.fileno(), sys.stdout.fileno()
    sock = connect(record)
    if commands is not None or not os.isatty(stdin):
        sock.sendall(HANDSHAKE + b" line\n")
        rest = _read_ready(sock, ready_timeout)
        try:
            if rest:
                os.write(stdout, rest)
            if commands is not None:
                sock.sendall("".join(f"{command}\n" for command in commands).encode())
                sock.shutdown(socket.SHUT_WR)
                stdin = None
            _relay(sock, stdin, stdout)
        finally:
            sock.close()
        return
    size = _terminal_size()
    term = os.environ.get("TERM") or "xterm"
    sock.sendall(HANDSHAKE + f" {size.lines} {size.columns} {term}\n".encode())
    rest = _read_ready(sock, ready_timeout)
    saved = termios.tcgetattr(stdin) if os.isatty(stdin) else None
    try:
        if saved is not None:
            tty.setraw(stdin, termios.TCSANOW)  # TCSAFLUSH would drop what was typed ahead
        if rest:
            os.write(stdout, rest)
        _relay(sock, stdin, stdout)
    finally:
        if saved is not None:
            termios.tcsetattr(stdin, termios.TCSADRAIN, saved)
        sock.close()


def connect(record, timeout=10.0):
    """Open a connection to the session of ``record``, token sent when over TCP.

    Args:
        record (dict): the session record.
        timeout (float): seconds allowed for the TCP connection.

    Returns:
        socket.socket: connected, ready for the handshake.

    Raises:
        AttachError: nothing to connect to, or the connection failed.
    """
    path = record.get("socket")
    if path and os.path.exists(path):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(path)
        except OSError as error:
            raise AttachError(f"cannot connect to {path}: {error.strerror}") from None
        return sock
    if not record.get("tcp"):
        raise AttachError(f"its socket {path} is not on this machine and it does not listen on TCP")
    host, _, port = record["tcp"].rpartition(":")
    try:
        sock = socket.create_connection((host, int(port)), timeout=timeout)
    except OSError as error:
        raise AttachError(f"cannot connect to {record['tcp']}: {error.strerror or error}") from None
    sock.settimeout(None)
    sock.sendall(TOKEN + f" {record.get('token', '')}\n".encode())
    return sock


def _terminal_size():
    try:
        return os.get_terminal_size(sys.stdout.fileno())
    except OSError:
        return os.terminal_size((80, 24))


def _read_ready(sock, timeout):
    data = b""
    sock.settimeout(timeout)
    try:
        while b"\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    except TimeoutError:
        raise AttachError(f"the session did not answer within {timeout:g} s") from None
    finally:
        sock.settimeout(None)
    line, _, rest = data.partition(b"\n")
    if line + b"\n" != READY:
        message = line.decode("utf-8", "replace").strip() or "the session closed the connection"
        raise AttachError(message.removeprefix("autodbg: "))
    return rest


def _relay(sock, stdin, stdout):
    watch = [sock] if stdin is None else [sock, stdin]
    while True:
        ready, _, _ = select.select(watch, [], [])
        if sock in ready:
            data = sock.recv(65536)
            if not data:
                return
            os.write(stdout, data)
        if stdin in ready:
            data = os.read(stdin, 65536)
            if not data:
                watch = [sock]  # our stdin ended; keep showing output until the server closes
                sock.shutdown(socket.SHUT_WR)
                continue
            sock.sendall(data)
