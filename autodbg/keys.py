"""The per-user key of the TCP mode (``AUTODBG_LISTEN``), and the proofs made with it.

A session that listens on TCP and a client that connects to it prove to each
other that they hold the same key, by challenge-response: each side sends a
fresh random nonce and answers with ``HMAC-SHA256(key, role | client nonce |
server nonce)``, ``role`` being ``client`` or ``server`` so that neither
answer can be replayed as the other (RFC 2104, and the mutual
authentication of Python's own ``multiprocessing.connection``, which only
proves the client). The key never crosses the network and is in no record
and no store: it sits in a file of the user's, ``~/.config/autodbg/key`` or
``AUTODBG_KEY_FILE``, which every host of a job must share (a shared home
directory, or a copy).

Proving the key is not enough: a client sent to a relay (by a forged
record, say) would prove it through the relay to the real session, and the
relay could then type debugger commands of its own. So every byte after the
proofs travels in frames that carry an HMAC under a key of that connection
and that direction, numbered (:func:`seal`): a relay can pass them on, not
change, add, drop or reorder them. They are not encrypted: what the session
prints can be read on the network (the remote command, ``ssh``, encrypts).

The file is checked every time it is read, as the runtime directory is
(:func:`autodbg.registry.checked_dir`): not a symlink, a regular file owned
by this user and readable by nobody else, in a directory that nobody else
may write (or they could swap the file).
"""

import hashlib
import hmac
import os
import stat
import time

KEY_BYTES = 32  # random bytes of a key autodbg makes; the least a key file may hold
NONCE_BYTES = 32
FRAME_MAX = 65536  # bytes of data in one sealed frame
RELAY_BUFFER = 4 * FRAME_MAX  # bytes a relay holds for one side before it stops reading the other
_HEADER = 4 + 32  # a frame: data length (4 bytes, big-endian), HMAC-SHA256, data
_relayed: set = set()  # the sockets of the relays running in this process (:func:`forget`)


class KeyFileError(Exception):
    """The key file is missing, unsafe or unreadable; the message is one line saying what to do."""


def load(path, create=False):
    """Return the key in ``path``, making a new random one first when it is missing and ``create``.

    A new key is :data:`KEY_BYTES` random bytes, written as hex to a 0600
    file (in a 0700 directory made if needed), atomically: written to a
    temporary name and linked into place, so that ranks starting at once
    all end up with the first one's key. Does not block.

    Args:
        path (str): the key file (``config.current().key_file``).
        create (bool): make the key when the file does not exist (the session's
            side; a client has nothing to gain from a key no session holds).

    Returns:
        bytes: the key, the file's content without surrounding white space.

    Raises:
        KeyFileError: missing (and not ``create``), a symlink, not a regular
            file, another user's, readable or writable by others, in a directory
            others may write, shorter than :data:`KEY_BYTES`, or unreadable.
    """
    path = os.path.abspath(path)
    if create and not os.path.lexists(path):
        _create(path)
    missing = KeyFileError(
        f"no key file at {path}: the TCP mode needs the key of the session's host there "
        "(copy that host's file, use a home directory the hosts share, or set AUTODBG_KEY_FILE)"
    )
    if not os.path.isdir(os.path.dirname(path)):
        raise missing
    _check_dir(os.path.dirname(path))
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        raise missing from None
    except OSError as error:
        if os.path.islink(path):
            raise KeyFileError(f"key file {path} is a symlink; refusing it") from None
        raise KeyFileError(f"cannot read the key file {path}: {error.strerror}") from None
    with os.fdopen(fd, "rb") as source:
        info = os.fstat(source.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise KeyFileError(f"key file {path} is not a regular file")
        if info.st_uid != os.getuid():
            raise KeyFileError(
                f"key file {path} belongs to uid {info.st_uid}, not you (uid {os.getuid()})"
            )
        if info.st_mode & 0o077:
            raise KeyFileError(
                f"key file {path} may be read or written by others "
                f"(mode {stat.S_IMODE(info.st_mode):o}); chmod 600 it, or remove it for a new key"
            )
        key = source.read(4096).strip()
    if len(key) < KEY_BYTES:
        raise KeyFileError(
            f"key file {path} holds {len(key)} bytes, fewer than {KEY_BYTES}; "
            "remove it for a new key"
        )
    return key


def _check_dir(folder):
    try:
        info = os.stat(folder)
    except OSError as error:
        raise KeyFileError(f"key file directory {folder}: {error.strerror}") from None
    # A sticky directory (/tmp) lets nobody else rename or remove a file of ours.
    shared = info.st_mode & 0o022 and not info.st_mode & stat.S_ISVTX
    if info.st_uid not in (os.getuid(), 0) or shared:
        raise KeyFileError(
            f"key file directory {folder} may be written by others (owner uid {info.st_uid}, "
            f"mode {stat.S_IMODE(info.st_mode):o}); set AUTODBG_KEY_FILE to a file in a "
            "directory only you can write"
        )


def _create(path):
    import secrets

    folder = os.path.dirname(path)
    try:
        os.makedirs(folder, 0o700, exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            with os.fdopen(fd, "w") as out:
                out.write(secrets.token_hex(KEY_BYTES) + "\n")
            try:
                os.link(tmp, path)  # fails if another process made it first: theirs stands
            except FileExistsError:
                pass
        finally:
            os.unlink(tmp)
    except OSError as error:
        raise KeyFileError(f"cannot create the key file {path}: {error.strerror}") from None


def nonce():
    """Return :data:`NONCE_BYTES` fresh random bytes (``secrets.token_bytes``)."""
    import secrets

    return secrets.token_bytes(NONCE_BYTES)


def proof(key, role, client_nonce, server_nonce):
    """Return the proof that ``role`` holds ``key``, for one pair of nonces.

    Args:
        key (bytes): the key (:func:`load`).
        role (str): ``client`` or ``server``: who proves.
        client_nonce (bytes): the client's nonce.
        server_nonce (bytes): the server's nonce.

    Returns:
        bytes: ``HMAC-SHA256(key, b"autodbg <role> " + client_nonce + server_nonce)``, 32 bytes.
    """
    message = b"autodbg " + role.encode() + b" " + client_nonce + server_nonce
    return hmac.new(key, message, hashlib.sha256).digest()


def verify(key, role, client_nonce, server_nonce, answer):
    """Tell whether ``answer`` is ``role``'s proof for these nonces (constant-time comparison).

    Args:
        answer (bytes): the proof received.

    Returns:
        bool: it is (``hmac.compare_digest``).
    """
    return hmac.compare_digest(proof(key, role, client_nonce, server_nonce), answer)


def seal(conn, role, key, client_nonce, server_nonce, send_wait=None):
    """Carry a connection's traffic in authenticated frames, through a local socket.

    Starts the thread ``autodbg-tcp-relay``, which relays between ``conn``
    (frames) and the socket returned (plain bytes), until both directions
    have ended or the returned socket's user has closed it. A frame whose
    HMAC does not match ends the connection. A shutdown of the sending side
    goes through as TCP's own (``shutdown(SHUT_WR)``). The relay never blocks
    on a send (:func:`_relay`); it drops a peer that takes none of its output
    for ``send_wait`` seconds.

    Args:
        conn (socket.socket): the authenticated TCP connection; the relay owns it now.
        role (str): ``client`` or ``server``: this end.
        key (bytes): the user's key.
        client_nonce (bytes): the client's nonce of this connection.
        server_nonce (bytes): the server's nonce of this connection.
        send_wait (float | None): seconds the peer may take no output before
            the relay ends; None: no bound (a client waits for its session).

    Returns:
        socket.socket: a connected Unix socket to use as ``conn`` would have been.
    """
    import socket
    import threading

    from autodbg import guard

    inner, outer = socket.socketpair()
    _relayed.update((conn, outer))
    upstream = proof(key, "client to server", client_nonce, server_nonce)
    downstream = proof(key, "server to client", client_nonce, server_nonce)
    send, receive = (upstream, downstream) if role == "client" else (downstream, upstream)
    relay = guard.protect("the TCP connection's relay")(_relay)
    threading.Thread(
        target=relay,
        args=(conn, outer, send, receive, send_wait),
        name="autodbg-tcp-relay",
        daemon=True,
    ).start()
    return inner


def _frame_mac(key, number, data):
    return hmac.new(key, number.to_bytes(8, "big") + data, hashlib.sha256).digest()


def _relay(tcp, local, send, receive, send_wait):
    """Relay between ``tcp`` (frames) and ``local`` (plain bytes); never blocks on a send.

    Both sockets are non-blocking: what one side has not taken yet waits in a
    buffer of its own, and the other side is read only while that buffer
    holds less than :data:`RELAY_BUFFER` bytes, so each direction waits for
    its reader without holding up the other (a client pasting keys while a
    command prints: the session takes no keys, the relay still takes its
    output). ``tcp`` must take some of what waits for it within ``send_wait``
    seconds (None: no bound), else the connection is dropped, as
    :func:`autodbg.backends.socket._send` drops a client that reads nothing.
    """
    import select
    import socket

    sent = received = 0
    pending = b""  # bytes from tcp, not yet a whole frame
    out = {tcp: bytearray(), local: bytearray()}  # bytes for each side, not yet taken
    other = {tcp: local, local: tcp}
    reading = {tcp: True, local: True}
    closing = {tcp: False, local: False}  # its peer's end came: shut it once its bytes are out
    gone = set()  # sides that hung up: nothing more goes to or comes from them
    stalled = None  # monotonic time since which tcp has taken nothing of what waits for it
    poller = select.poll()
    ended = select.POLLHUP | select.POLLERR | select.POLLNVAL
    try:
        for sock in (tcp, local):
            sock.setblocking(False)
        while reading[tcp] or reading[local] or out[tcp] or out[local]:
            for sock in set(out) - gone:
                room = len(out[other[sock]]) < RELAY_BUFFER
                mask = select.POLLIN if reading[sock] and room else 0
                poller.register(sock, mask | (select.POLLOUT if out[sock] else 0))
            wait = None
            if out[tcp] and send_wait is not None:
                stalled = time.monotonic() if stalled is None else stalled
                wait = max(0, int((stalled + send_wait - time.monotonic()) * 1000) + 1)
            events = dict(poller.poll(wait))
            if out[tcp] and send_wait is not None and time.monotonic() - stalled >= send_wait:
                return  # it has read nothing for send_wait seconds: drop it
            for sock in set(out) - gone:
                got = events.get(sock.fileno(), 0)
                if got & ended and not reading[sock]:
                    # Hung up on a side already ended: what waits for it is lost, what
                    # waits for the other side still goes there (the session's last words).
                    gone.add(sock)
                    poller.unregister(sock)
                    out[sock].clear()
                    reading[other[sock]] = False
                elif got & select.POLLOUT:
                    taken = sock.send(out[sock], socket.MSG_NOSIGNAL)
                    del out[sock][:taken]
                    if sock is tcp and taken:
                        stalled = None
            if reading[local] and events.get(local.fileno(), 0) & (select.POLLIN | ended):
                data = local.recv(FRAME_MAX)
                if not data:
                    reading[local] = False
                    closing[tcp] = True
                else:
                    mac = _frame_mac(send, sent, data)
                    out[tcp] += len(data).to_bytes(4, "big") + mac + data
                    sent += 1
            if reading[tcp] and events.get(tcp.fileno(), 0) & (select.POLLIN | ended):
                chunk = tcp.recv(FRAME_MAX + _HEADER)
                if not chunk:
                    reading[tcp] = False
                    closing[local] = True
                pending += chunk
                while len(pending) >= _HEADER:
                    size = int.from_bytes(pending[:4], "big")
                    if not 0 < size <= FRAME_MAX:
                        return
                    if len(pending) < _HEADER + size:
                        break
                    mac, data = pending[4:_HEADER], pending[_HEADER : _HEADER + size]
                    pending = pending[_HEADER + size :]
                    if not hmac.compare_digest(mac, _frame_mac(receive, received, data)):
                        return  # changed, added, dropped or reordered on the way
                    received += 1
                    out[local] += data
            for sock in set(out) - gone:
                if closing[sock] and not out[sock]:
                    closing[sock] = False
                    sock.shutdown(socket.SHUT_WR)  # TCP's own end of input, passed on
    except OSError:
        pass  # a side is gone (ECONNRESET, EPIPE): so is the connection
    finally:
        _relayed.difference_update((tcp, local))
        tcp.close()
        local.close()


def forget():
    """Close this process's copies of the relays' sockets (in a forked child, which has no relay).

    Else the child's copies would keep the TCP clients connected after the
    parent's relays end.
    """
    for sock in list(_relayed):
        sock.close()
    _relayed.clear()
