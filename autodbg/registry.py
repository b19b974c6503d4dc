"""The runtime directory and the session records in it.

Layout (DESIGN.md, contract 5)::

    $AUTODBG_DIR | $XDG_RUNTIME_DIR/autodbg | /tmp/autodbg-<uid>     0700, ours, no symlink
        <job>/                      one folder per job, 0700
            <pid>.json              the session record, written to a temporary name then renamed
            <pid>.sock              the session's Unix socket, 0600
        tty-<host>-<device>.lock    the terminal lock, one per terminal device
        break-<host>-<pid>.cancel   a live attach to <pid> that its client withdrew

The terminal lock is keyed by the terminal rather than the job: any two
processes that read one terminal must take turns, whichever job they are in.

The directory may be shared by several machines (``AUTODBG_DIR`` in an NFS
home), and a job folder by the nodes of one job. A pid means something only
on its own host, so every record and stack file says its ``host``, the names
that hold a pid or a device number say it too, and a process looks at, and
cleans up, only what its own host wrote: another host's records, sockets and
stack files are left alone, however dead their pids look from here. And a
path that a record names is removed only when it lies in the record's own job
folder: a stale or edited record is data, not an instruction to delete a file.
Like manhole's ``check_credentials``, nothing here trusts the file system
alone: the directory is checked on every use and the socket server checks the
peer's uid too.
"""

import json
import os
import stat
import sys
import time

EMPTY_JOB_GRACE = 60  # seconds an empty job folder is left alone
MAX_RECORD = 1 << 20  # bytes: a larger session or job record is no record of autodbg's

SCHEMA = (
    "pid",
    "rank",
    "local_rank",
    "world_size",
    "host",
    "job",
    "state",
    "socket",
    "exception",
    "where",
    "started",
)

_NONE = type(None)
_NUMBER = (int, float, _NONE)
# The types of the identity fields (autodbg.identity) that records and stack headers carry.
IDENTITY_TYPES = {
    "pid": (int,),
    "job": (str,),
    "host": (str, _NONE),
    "rank": (int, _NONE),
    "local_rank": (int, _NONE),
    "world_size": (int, _NONE),
    "role": (str, _NONE),
    "parent_pid": (int, _NONE),
}
# The types of the fields the CLI relies on in a session record (None: absent).
TYPES = {
    **IDENTITY_TYPES,
    "state": (str, _NONE),
    "socket": (str, _NONE),
    "tcp": (str, _NONE),
    "exception": (str, _NONE),
    "where": (str, _NONE),
    "thread": (str, _NONE),
    "started": _NUMBER,
    "process_started": _NUMBER,
}


class RuntimeDirError(Exception):
    """The runtime directory is unsafe or cannot be made; the message says what to do."""


def runtime_dir(configured=None):
    """Return the runtime directory, creating it (mode 0700) if needed.

    Args:
        configured (str | None): ``AUTODBG_DIR``; None for
            ``$XDG_RUNTIME_DIR/autodbg``, else ``/tmp/autodbg-<uid>``.

    Returns:
        str: an absolute path, checked as :func:`checked_dir` does.

    Raises:
        RuntimeDirError: the directory is a symlink, owned by another user,
            group- or world-writable, or cannot be created.
    """
    if configured:
        path = configured
    elif os.environ.get("XDG_RUNTIME_DIR"):
        path = os.path.join(os.environ["XDG_RUNTIME_DIR"], "autodbg")
    else:
        path = f"/tmp/autodbg-{os.getuid()}"
    return checked_dir(os.path.abspath(path))


def checked_dir(path, create=True):
    """Create ``path`` (0700) if missing and check that only this user controls it.

    Args:
        path (str): the directory.
        create (bool): create it when missing.

    Returns:
        str: ``path``.

    Raises:
        RuntimeDirError: as for :func:`runtime_dir`, or missing with ``create`` False.
    """
    if create:
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            pass
        except OSError as error:
            raise RuntimeDirError(
                f"cannot create the runtime directory {path}: {error.strerror}; "
                "set AUTODBG_DIR to a directory you own"
            ) from None
    try:
        info = os.lstat(path)
    except OSError as error:
        raise RuntimeDirError(f"runtime directory {path}: {error.strerror}") from None
    fix = "set AUTODBG_DIR to a directory only you can write, or remove it"
    if stat.S_ISLNK(info.st_mode):
        raise RuntimeDirError(f"runtime directory {path} is a symlink; refusing it ({fix})")
    if not stat.S_ISDIR(info.st_mode):
        raise RuntimeDirError(f"runtime directory {path} is not a directory ({fix})")
    if info.st_uid != os.getuid():
        raise RuntimeDirError(
            f"runtime directory {path} belongs to uid {info.st_uid}, not you (uid {os.getuid()}) ({fix})"
        )
    if info.st_mode & 0o022:
        raise RuntimeDirError(
            f"runtime directory {path} is group- or world-writable "
            f"(mode {stat.S_IMODE(info.st_mode):o}) ({fix}, or chmod 700 it)"
        )
    return path


def job_dir(root, job):
    """Return the job's folder in the runtime directory, created 0700 if needed.

    Raises:
        RuntimeDirError: as for :func:`checked_dir`.
    """
    return checked_dir(os.path.join(root, job))


def tty_lock_path(root, fd):
    """Return the terminal lock's path for the terminal open on ``fd`` (of this host)."""
    return os.path.join(root, f"tty-{host_tag()}-{os.fstat(fd).st_rdev}.lock")


def break_cancel_path(root, pid):
    """Return the marker by which ``autodbg attach`` withdraws a break-in request to ``pid``.

    ``pid`` is a process of this host; the marker's name says which host.
    """
    return os.path.join(root, f"break-{host_tag()}-{pid}.cancel")


def host_tag(host=None):
    """Return a host name as one harmless file-name component.

    Args:
        host (str | None): the name; None for this host's (``os.uname().nodename``).
    """
    from autodbg import identity

    return identity.file_name(os.uname().nodename if host is None else str(host), "host")


def here(entry):
    """Tell whether a record or a stack file's header was written on this host.

    One without a ``host`` field counts as this host's (as before records had one).

    Args:
        entry (dict): the record or header.

    Returns:
        bool: its ``host`` is this machine's node name (``os.uname().nodename``).
    """
    return entry.get("host") in (None, os.uname().nodename)


def catches(pid, signum):
    """Tell whether process ``pid`` has a handler installed for signal ``signum``.

    Reads the ``SigCgt`` mask of ``/proc/<pid>/status`` (bit ``signum - 1``),
    the kernel's own word on it: a process whose handler is not installed (a
    shell, a Python of another venv, ``python -S``) would take the signal's
    default action, and SIGUSR1's and SIGUSR2's is to end the process. It
    does not block.

    Args:
        pid (int): the process.
        signum (int): the signal.

    Returns:
        bool: False also when the process is gone or its status cannot be read.
    """
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("SigCgt:"):
                    return bool(int(line.split()[1], 16) >> (signum - 1) & 1)
    except (OSError, ValueError, IndexError):
        pass
    return False


def signal_name(signum):
    """Return ``SIGUSR2`` for 12, ``signal 99`` for a number that names no signal."""
    import signal

    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def write(path, record):
    """Write ``record`` as JSON to ``path`` atomically (temporary file, then rename).

    Args:
        path (str): the record's path, ``<job>/<pid>.json``.
        record (dict): the record; see :data:`SCHEMA`.

    Raises:
        OSError: the file cannot be written.
    """
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(json.dumps(record))  # one shot: json's C encoder (json.dump's is pure Python)
    os.replace(tmp, path)


def read(path, limit, whole=True):
    """Return the bytes of the regular file at ``path``, the CLI's way of reading what others may have left.

    A record is data: a symlink (to ``/dev/zero``, to a file of someone else's),
    a FIFO (whose ``open`` would block until a writer comes) or an endless or
    huge file is no record of autodbg's, and must not hang or swamp the CLI.
    So the file is opened without following a symlink (``O_NOFOLLOW``) and
    without blocking (``O_NONBLOCK``), and only a regular file is read, at
    most ``limit`` bytes. Does not block.

    Args:
        path (str): the file.
        limit (int): bytes to read at most.
        whole (bool): a file longer than ``limit`` is refused (else its first ``limit`` bytes are returned).

    Raises:
        OSError: it cannot be opened (a symlink: ``ELOOP``).
        ValueError: it is not a regular file, or longer than ``limit`` with ``whole``.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ValueError(f"{path} is not a regular file")
        chunks, size = [], 0
        while size <= limit:
            chunk = os.read(fd, limit + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > limit:
        if whole:
            raise ValueError(f"{path} is larger than {limit} bytes")
        data = data[:limit]
    return data


def parse(data):
    """Return the JSON value in ``data`` (bytes or str), as :func:`json.loads` does.

    Raises:
        ValueError: not JSON, or nested deeper than the parser's recursion
            (``RecursionError``, which ``json`` does not turn into a ``ValueError``).
    """
    try:
        return json.loads(data)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def load(path, limit=MAX_RECORD):
    """Return the JSON value of the file at ``path``, read as :func:`read` does (at most ``limit`` bytes).

    Raises:
        OSError: as :func:`read`.
        ValueError: as :func:`read`, or not JSON (:func:`parse`).
    """
    return parse(read(path, limit))


def shaped(entry, types):
    """Tell whether ``entry`` is a dict whose fields have the types ``types`` names.

    What the CLI reads (a record, a stack file's header, a value in the job's
    store) may have been edited, cut short or forged: only one of the shape
    the CLI relies on is used, instead of failing on it with a traceback.

    Args:
        entry: the value read.
        types (dict[str, tuple[type, ...]]): field name -> the types it may have;
            ``type(None)`` among them makes the field optional.
    """
    return isinstance(entry, dict) and all(
        isinstance(entry.get(name), kinds) and not isinstance(entry.get(name), bool)
        for name, kinds in types.items()
    )


def remove(*paths):
    """Remove files, ignoring those already gone."""
    for path in paths:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def process_started(pid):
    """Return the start time of process ``pid`` (epoch seconds), None when it is gone.

    On Linux it reads ``/proc`` as psutil's ``Process.create_time()`` does (the
    ``starttime`` of ``/proc/<pid>/stat`` in clock ticks, plus ``btime`` of
    ``/proc/stat``), to the same value, without importing psutil: a session
    publishes its record with it, and importing psutil would be most of the
    time from a crash to its listed session. Elsewhere it asks psutil.
    """
    if sys.platform.startswith("linux"):
        try:
            with open(f"/proc/{pid}/stat", "rb") as source:
                ticks = int(source.read().rpartition(b")")[2].split()[19])
            with open("/proc/stat", "rb") as source:
                boot = next(float(line.split()[1]) for line in source if line.startswith(b"btime"))
            return ticks / os.sysconf("SC_CLK_TCK") + boot
        except OSError:
            return None  # gone, or hidden from us (psutil: NoSuchProcess, AccessDenied)
        except (ValueError, IndexError, StopIteration):
            pass  # a /proc this parser does not know: psutil's word
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except (psutil.Error, ValueError, OverflowError):  # a negative or huge pid, read from a record
        return None


def sessions(root):
    """List the live session records of this host under ``root``; remove those of dead processes.

    A record is live when its process exists and started when the record says
    (so a recycled pid does not revive a dead session). Records of any state
    are listed, ``opening`` included: that process is in a session already.
    Records of other hosts are neither listed (their pids mean nothing here;
    other nodes' sessions come from the job's store, :mod:`autodbg.store`)
    nor removed. A dead record's socket goes with it only when it is the
    record's own, in the same job folder.

    Args:
        root (str): the runtime directory.

    Returns:
        list[dict]: records, newest job first, then by rank and pid.
    """
    found = []
    for job in _listdir(root):
        folder = os.path.join(root, job)
        if not os.path.isdir(folder) or os.path.islink(folder):
            continue
        for name in _listdir(folder):
            if not name.endswith(".json") or name.startswith("node."):
                continue  # node.<host>.json: a job record (autodbg.discovery), no session
            path = os.path.join(folder, name)
            try:
                record = load(path)
            except (OSError, ValueError):
                continue
            if not shaped(record, TYPES) or not here(record):
                continue
            pid = record["pid"]
            started = process_started(pid)
            expected = record.get("process_started")
            if started is None or (expected is not None and abs(started - expected) > 1):
                # A web session's token file (autodbg.backends.web) goes with its record.
                token = os.path.join(folder, f"{pid}.web-token")
                remove(path, token, *_own_socket(folder, pid, record.get("socket")))
                continue
            found.append(record)
        try:
            # Only a job folder that has been empty for a while: a session may
            # have just made it and not yet put its socket or record there.
            if time.time() - os.stat(folder).st_mtime > EMPTY_JOB_GRACE:
                os.rmdir(folder)  # only succeeds when the job left nothing behind
        except OSError:
            pass
    newest = {}
    for record in found:
        newest[record["job"]] = max(newest.get(record["job"], 0), record.get("started") or 0)
    found.sort(
        key=lambda r: (
            -newest[r["job"]],
            r["job"],
            r["rank"] if r.get("rank") is not None else -1,
            r["pid"],
        )
    )
    return found


def _own_socket(folder, pid, path):
    # The socket a session makes is <job folder>/<pid>.sock; a record naming
    # any other path names a file that is not autodbg's to remove.
    if not isinstance(path, str) or os.path.basename(path) != f"{pid}.sock":
        return []
    try:
        return [path] if os.path.samefile(os.path.dirname(path) or ".", folder) else []
    except OSError:
        return []


def _listdir(path):
    try:
        return sorted(os.listdir(path))
    except OSError:
        return []
