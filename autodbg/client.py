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

from autodbg.backends.socket import HANDSHAKE, READY


class AttachError(Exception):
    """The session could not be reached; the message is one line for the user."""


def attach(path, ready_timeout=10.0):
    """Connect this terminal to the session listening at ``path``; return when it ends.

    Blocks until the session ends or detaches (Ctrl-D at the prompt), or the
    server closes the connection.

    Args:
        path (str): the session's Unix socket.
        ready_timeout (float): seconds to wait for the session to answer.

    Raises:
        AttachError: the socket cannot be reached, the session refused the
            client (busy, other uid), or it did not answer in time.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except OSError as error:
        raise AttachError(f"cannot connect to {path}: {error.strerror}") from None
    size = _terminal_size()
    term = os.environ.get("TERM") or "xterm"
    sock.sendall(HANDSHAKE + f" {size.lines} {size.columns} {term}\n".encode())
    rest = _read_ready(sock, ready_timeout)
    stdin, stdout = sys.stdin.fileno(), sys.stdout.fileno()
    saved = termios.tcgetattr(stdin) if os.isatty(stdin) else None
    try:
        if saved is not None:
            tty.setraw(stdin)
        if rest:
            os.write(stdout, rest)
        _relay(sock, stdin, stdout)
    finally:
        if saved is not None:
            termios.tcsetattr(stdin, termios.TCSADRAIN, saved)
        sock.close()


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
    except socket.timeout:
        raise AttachError(f"the session did not answer within {timeout:g} s") from None
    finally:
        sock.settimeout(None)
    line, _, rest = data.partition(b"\n")
    if line + b"\n" != READY:
        message = line.decode("utf-8", "replace").strip() or "the session closed the connection"
        raise AttachError(message.removeprefix("autodbg: "))
    return rest


def _relay(sock, stdin, stdout):
    watch = [sock, stdin]
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
