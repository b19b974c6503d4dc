"""The ``autodbg attach`` client: this terminal, relayed to a session's socket.

It sends the handshake of :mod:`autodbg.backends.socket` (window size and
``TERM``), then puts this terminal in raw mode, so that every key, Ctrl-C and
Ctrl-D included, reaches the session's pty and IPython's prompt; the
terminal's modes are restored however the client ends.

A record is data, which anyone who can write to the job's store or who
forged a file may have written: the client checks what it asks of it
(:func:`connect`) before it connects anywhere.
"""

import os
import select
import socket
import stat
import sys
import termios
import tty

from autodbg.backends.socket import HANDSHAKE, READY, TCP_HELLO, TCP_NONCE, TCP_PROOF


class AttachError(Exception):
    """The session could not be reached; the message is one line for the user."""


def attach(record, commands=None, ready_timeout=10.0):
    """Connect this terminal, or this process's input and output, to the session of ``record``.

    Connects as :func:`connect` says. On a terminal, the session's full debugger
    (its pty, relayed); what was typed before the prompt showed is kept. With
    input that is not a terminal (a pipe, a script) or with ``commands``, a
    line client: each line is a debugger command, the output comes as plain
    text, and the client detaches when its input ends (the session then
    waits for the next client, unless a command ended it). Blocks until then,
    or until the session ends.

    Args:
        record (dict): the session record (``host``, ``pid``, ``socket``, ``tcp``).
        commands (list[str] | None): debugger commands to run instead of
            reading input (``autodbg attach -c``).
        ready_timeout (float): seconds to wait for the session to answer.

    Raises:
        AttachError: the record asks for what :func:`connect` refuses, the
            session cannot be reached, refused the client (busy, other uid,
            wrong key), or did not answer in time.
    """
    stdin, stdout = sys.stdin.fileno(), sys.stdout.fileno()
    sock = connect(record)
    if commands is not None or not os.isatty(stdin):
        _hello(sock, HANDSHAKE + b" line\n")
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
    _hello(sock, HANDSHAKE + f" {size.lines} {size.columns} {term}\n".encode())
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
    """Open a connection to the session of ``record``, after checking what the record asks.

    A record of this host is reached through its Unix socket, and only when
    that is the session's own: ``<pid>.sock`` in a job folder of this user's
    runtime directory (its real path, symlinks resolved), a socket (``lstat``)
    owned by this user. It is connected to by that real path. Another host's
    record is never reached through its ``socket`` path, which names a file of
    that host: through its ``tcp`` address when it has one (the TCP mode),
    authenticated both ways with the user's key (:mod:`autodbg.keys`), so that
    a forged address leads to a refusal, not to a session that is not the
    user's. A record of this host whose socket is not in this runtime
    directory (a session run with another ``AUTODBG_DIR``) is reached the same
    way when it has ``tcp``.

    Blocks up to ``timeout`` seconds.

    Args:
        record (dict): the session record.
        timeout (float): seconds allowed for connecting and authenticating.

    Returns:
        socket.socket: connected (and authenticated), ready for the handshake.

    Raises:
        AttachError: the record asks for what is refused (one line saying
            what), the key is missing or unsafe, the connection failed, or the
            listener did not prove it holds the key.
    """
    from autodbg import registry

    if registry.here(record):
        path, problem = _own_socket(record)
        if problem is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(path)
            except OSError as error:
                sock.close()
                raise AttachError(f"cannot connect to {path}: {error.strerror}") from None
            return sock
        if not record.get("tcp"):
            raise AttachError(problem)
    elif not record.get("tcp"):
        raise AttachError(
            f"it runs on host {record.get('host')}, and it does not listen on TCP: "
            f"reach it from {record.get('host')} (`autodbg attach` there)"
        )
    return _connect_tcp(str(record["tcp"]), timeout)


def _own_socket(record):
    """Return ``(real path, None)`` when ``record``'s socket is its session's own, else ``(None, why)``."""
    from autodbg import config, registry

    path, pid = record.get("socket"), record.get("pid")
    refused = f"refused the record's socket {path!r}"
    if not isinstance(path, str) or not os.path.isabs(path) or not isinstance(pid, int):
        return None, f"{refused}: not an absolute path of a session's socket"
    try:
        root = os.path.realpath(registry.runtime_dir(config.current().dir))
    except registry.RuntimeDirError as error:
        return None, str(error)
    real = os.path.realpath(path)
    folder = os.path.dirname(real)
    if os.path.basename(real) != f"{pid}.sock" or os.path.dirname(folder) != root:
        return None, (
            f"{refused}: it is not {pid}.sock in a job folder of your runtime directory {root}"
        )
    try:
        registry.checked_dir(folder, create=False)
        info = os.lstat(real)
    except registry.RuntimeDirError as error:
        return None, f"{refused}: {error}"
    except FileNotFoundError:
        return None, f"its socket {path} is gone: the session has ended"
    except OSError as error:
        return None, f"{refused}: {error.strerror}"
    if not stat.S_ISSOCK(info.st_mode):
        return None, f"{refused}: it is not a socket"
    if info.st_uid != os.getuid():
        return None, f"{refused}: it belongs to uid {info.st_uid}, not you (uid {os.getuid()})"
    return real, None


def _connect_tcp(address, timeout):
    """Connect to a session's TCP listener at ``address`` and authenticate both ways."""
    from autodbg import config, keys

    try:
        key = keys.load(config.current().key_file)
    except keys.KeyFileError as error:
        raise AttachError(str(error)) from None
    host, _, port = address.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not host or not port.isdigit():
        raise AttachError(f"refused the record's TCP address {address!r}: not HOST:PORT")
    try:
        sock = socket.create_connection((host, int(port)), timeout=timeout)
    except OSError as error:
        raise AttachError(f"cannot connect to {address}: {error.strerror or error}") from None
    try:
        client_nonce = keys.nonce()
        sock.sendall(TCP_HELLO + b" " + client_nonce.hex().encode() + b"\n")
        server_nonce = _tcp_answer(sock, TCP_NONCE, keys.NONCE_BYTES, address)
        mine = keys.proof(key, "client", client_nonce, server_nonce)
        sock.sendall(TCP_PROOF + b" " + mine.hex().encode() + b"\n")
        theirs = _tcp_answer(sock, TCP_PROOF, 32, address)
        if not keys.verify(key, "server", client_nonce, server_nonce, theirs):
            raise AttachError(
                f"refused {address}: it did not prove that it holds your key; "
                "it is not your session, or its key file differs from yours"
            )
    except TimeoutError:
        sock.close()
        raise AttachError(f"{address} did not authenticate within {timeout:g} s") from None
    except OSError as error:
        sock.close()
        raise AttachError(
            f"lost {address} while authenticating: {error.strerror or error}"
        ) from None
    except AttachError:
        sock.close()
        raise
    sock.settimeout(None)
    return keys.seal(sock, "client", key, client_nonce, server_nonce)


def _tcp_answer(sock, word, size, address):
    """Read the listener's next line, ``<word> <hex of size bytes>``; return the bytes.

    Raises:
        AttachError: the listener refused (its own line), or said something else.
    """
    line = b""
    while not line.endswith(b"\n") and len(line) < 512:
        byte = sock.recv(1)  # byte by byte: what follows the line is the session's
        if not byte:
            break
        line += byte
    fields = line.split()
    if len(fields) == 2 and fields[0] == word and len(fields[1]) == 2 * size:
        try:
            return bytes.fromhex(fields[1].decode("ascii"))
        except ValueError:
            pass
    text = line.decode("utf-8", "replace").strip()
    if not text:
        raise AttachError(f"{address} closed the connection while authenticating")
    if text.startswith("autodbg: "):
        raise AttachError(text.removeprefix("autodbg: "))
    raise AttachError(
        f"refused {address}: it is not an autodbg session (it answered {text[:40]!r})"
    )


def _terminal_size():
    try:
        return os.get_terminal_size(sys.stdout.fileno())
    except OSError:
        return os.terminal_size((80, 24))


def _hello(sock, line):
    """Send the handshake ``line``; a connection the session closed already is not an error here.

    A session that refuses the client (busy, another uid) may close the
    connection before the handshake goes (``EPIPE``); its one line saying why
    is still there to read, and :func:`_read_ready` reports it.
    """
    try:
        sock.sendall(line)
    except (BrokenPipeError, ConnectionResetError):
        pass


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
    except ConnectionResetError:
        pass  # closed by the session: what came before says why
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
