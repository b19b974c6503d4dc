"""Crash records: what a post-mortem session saw, kept after the process is gone.

Every post-mortem session writes one before it waits for a client, so that a
crash at 3 a.m. that nobody attached to can still be read with
``autodbg show``. A record holds the traceback as Python printed it and, for
each frame, its locals as short reprs, with the process's rank, pid, argv,
host, job and time. Layout, inside the runtime directory (same checks as
:mod:`autodbg.registry`)::

    crashes/                        0700
        <job>/                      0700
            <UTC time>-<pid>.<host>.json   0600, written to a temporary name then renamed

Bounds, so that a record never costs the session much nor fills a disk:

- each value's repr is at most :data:`MAX_VALUE_CHARS` characters (``reprlib``,
  which never builds the whole repr of a long string or container); a repr that
  raises is kept as ``<repr failed: ...>``;
- a record is at most :data:`MAX_RECORD_BYTES` of JSON: locals are filled in
  innermost frame first, and what does not fit is counted, not written;
- the reprs run on a helper thread for at most :data:`REPR_SECONDS`: a user's
  ``__repr__`` that blocks (a lock, the network, a device) cannot hold the
  session. Values it did not reach are marked as such. A ``__repr__`` that
  never returns keeps that daemon thread, not the session;
- retention: at most :data:`KEEP` records per user and host (the whole
  runtime directory) and none older than :data:`MAX_AGE` seconds, pruned each
  time a record is written. A runtime directory may be shared by several
  hosts (an NFS home): a process prunes its own host's records only, known
  by the host in the file's name (or, in a name without one, in the record).
"""

import json
import os
import re
import reprlib
import sys
import time
import traceback

from autodbg import registry

MAX_VALUE_CHARS = 200
MAX_RECORD_BYTES = 256 * 1024
MAX_TRACEBACK_CHARS = 64 * 1024
MAX_FRAMES = 100  # the innermost ones; the traceback text still has them all
MAX_TRACE_CHARS = 64 * 1024  # of the last traced events (autodbg.trace), the newest kept
REPR_SECONDS = 2.0
KEEP = 100
MAX_AGE = 14 * 24 * 3600
FOLDER = "crashes"

_written = 0  # records this process wrote: a second one in the same millisecond gets a suffix


def record(session, exc, tb):
    """Write the crash record of a post-mortem session; never raises.

    Blocks for at most about :data:`REPR_SECONDS` (the locals' reprs) plus the
    time to write one file and prune old ones. A failure is one ``autodbg:`` line.

    Args:
        session (autodbg.session.Session): the session (identity, exception line, where).
        exc (BaseException): the uncaught exception.
        tb (types.TracebackType): its traceback.

    Returns:
        str | None: the record's path, None when none was written.
    """
    from autodbg.messages import say

    try:
        root = registry.runtime_dir(session.config.dir)
    except registry.RuntimeDirError:
        return None  # the session says so in its own line
    try:
        data = build(session, exc, tb)
        return save(root, data)
    except Exception as error:
        say(f"cannot write the crash record: {type(error).__name__}: {error}")
        return None


def build(session, exc, tb):
    """Return the crash record of ``exc`` as a dict of JSON-ready values (see :func:`record`)."""
    ident = session.identity
    now = time.time()
    text = "".join(traceback.format_exception(type(exc), exc, tb))
    if len(text) > MAX_TRACEBACK_CHARS:
        keep = MAX_TRACEBACK_CHARS // 4
        text = f"{text[:keep]}\n[... {len(text) - MAX_TRACEBACK_CHARS} characters left out ...]\n{text[-3 * keep :]}"
    frames = []
    while tb is not None:
        frames.append((tb.tb_frame, tb.tb_lineno))
        tb = tb.tb_next
    omitted = max(0, len(frames) - MAX_FRAMES)
    frames = frames[omitted:]
    data = {
        "pid": os.getpid(),
        **ident.fields(),
        "argv": list(sys.argv),
        "time": now,
        "thread": session.thread_name,
        "exception": session.exception,
        "where": session.where,
        "traceback": text,
        "frames_omitted": omitted,
        "frames": [
            {
                "file": frame.f_code.co_filename,
                "line": lineno,
                "function": frame.f_code.co_name,
                "locals": None,
                "locals_omitted": 0,
            }
            for frame, lineno in frames
        ],
        "truncated": False,
    }
    trace = sys.modules.get("autodbg.trace")  # AUTODBG_TRACE: the thread's last traced events
    if trace is not None:
        events = trace.last(session.thread_ident, trace.KEPT)
        while events and sum(map(len, events)) > MAX_TRACE_CHARS:
            events.pop(0)
        data["trace"] = events
    budget = MAX_RECORD_BYTES - len(json.dumps(data)) - 1024  # 1 KiB for the note and flags
    _fill_locals(data, [frame for frame, _ in frames], budget)
    return data


def _fill_locals(data, frames, budget):
    """Put each frame's locals in ``data["frames"]``, innermost first, within ``budget`` bytes and time."""
    import threading

    lock = threading.Lock()
    state = {"budget": budget, "stop": False}
    done = threading.Event()
    shown = {}  # frame index -> {name: repr}

    def work():
        try:
            reprs = _Bounded()
            for index in reversed(range(len(frames))):
                items = _items(frames[index])
                out = {}
                with lock:
                    shown[index] = (out, len(items))
                for name, value in items:
                    text = _short(reprs, value)
                    size = len(json.dumps(name)) + len(json.dumps(text)) + 4  # ": " and ", "
                    with lock:
                        if state["stop"]:
                            return
                        if size > state["budget"]:
                            state["budget"] = -1  # full: later frames get none either
                            return
                        state["budget"] -= size
                        out[name] = text
        except (
            BaseException
        ) as error:  # never an exception on our own thread: it would open a session
            state["error"] = f"{type(error).__name__}: {error}"
        finally:
            done.set()

    worker = threading.Thread(target=work, name="autodbg-crash-record", daemon=True)
    try:
        worker.start()
    except RuntimeError:  # no new threads at interpreter shutdown: no time bound then
        work()
    finished = done.wait(REPR_SECONDS)
    with lock:
        state["stop"] = True
        reached = {i: (dict(values), total) for i, (values, total) in shown.items()}
    for index, frame in enumerate(frames):
        entry = data["frames"][index]
        values, total = reached.get(index) or (None, len(_items(frame)))
        entry["locals"] = values
        entry["locals_omitted"] = total - len(values or ())
        if entry["locals_omitted"]:
            data["truncated"] = True
    if not finished:
        data["truncated"] = True
        data["note"] = (
            f"the reprs took more than {REPR_SECONDS:g} s; values not reached are left out"
        )
    elif state.get("error"):
        data["note"] = f"locals stopped at an error: {state['error']}"
    elif state["budget"] < 0:
        data["note"] = f"locals cut at the record's size bound ({MAX_RECORD_BYTES // 1024} KiB)"


def _items(frame):
    """Return ``frame``'s locals as (name, value) pairs; a module frame's without its definitions."""
    try:
        names = frame.f_locals
        items = list(names.items())
    except Exception:
        return []
    if names is frame.f_globals:
        import types

        definitions = (types.ModuleType, types.FunctionType, types.BuiltinFunctionType, type)
        items = [
            (k, v) for k, v in items if not k.startswith("__") and not isinstance(v, definitions)
        ]
    return [(str(k), v) for k, v in items]


class _Bounded(reprlib.Repr):
    """``reprlib`` with crash-record bounds; a failing ``__repr__`` raises to :func:`_short`."""

    def __init__(self):
        super().__init__()
        self.maxlevel = 3
        self.maxtuple = self.maxlist = self.maxarray = self.maxset = self.maxfrozenset = 10
        self.maxdeque = self.maxdict = 10
        self.maxstring = self.maxother = self.maxlong = MAX_VALUE_CHARS

    def repr_instance(self, obj, level):
        text = repr(obj)  # reprlib's own hides the error; the record says what it was
        return text if len(text) <= self.maxother else text[: self.maxother - 3] + "..."


def _short(reprs, value):
    try:
        text = reprs.repr(value)
    except Exception as error:
        try:
            reason = f"{type(error).__name__}: {error}"
        except Exception:
            reason = type(error).__name__
        text = f"<repr failed: {reason}>"
    if not isinstance(text, str):
        text = f"<repr failed: __repr__ returned {type(text).__name__}>"
    if len(text) > MAX_VALUE_CHARS:
        text = text[: MAX_VALUE_CHARS - 3] + "..."
    return text


def save(root, data):
    """Write ``data`` under ``root``'s crash folder (atomically, 0600), then prune old records.

    Args:
        root (str): the runtime directory, already checked.
        data (dict): the record, as :func:`build` makes it.

    Returns:
        str: the record's path.

    Raises:
        registry.RuntimeDirError: a folder on the way is unsafe.
        OSError: the file cannot be written.
    """
    global _written
    folder = registry.checked_dir(
        os.path.join(registry.checked_dir(os.path.join(root, FOLDER)), data["job"])
    )
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(data["time"]))
    millis = int(data["time"] * 1000) % 1000
    suffix = f"-{_written}" if _written else ""
    host = registry.host_tag(data["host"])  # retention on a shared directory goes by it (prune)
    path = os.path.join(folder, f"{stamp}.{millis:03d}Z-{data['pid']}{suffix}.{host}.json")
    registry.write(path, data)
    _written += 1
    prune(root)
    return path


def prune(root, now=None):
    """Remove this host's crash records beyond its newest :data:`KEEP`, or past :data:`MAX_AGE`.

    Other hosts' records are left alone (a runtime directory on a shared file
    system). Empty job folders go too, once they are older than
    :data:`registry.EMPTY_JOB_GRACE` (another process may have just made one).

    Args:
        root (str): the runtime directory.
        now (float | None): epoch seconds; None for the current time.
    """
    now = time.time() if now is None else now
    mine = registry.host_tag()
    entries = []
    for folder in _job_folders(root):
        for name in _listdir(folder):
            if name.endswith(".json"):
                path = os.path.join(folder, name)
                try:
                    if _host_of(path, name) == mine:
                        entries.append((path, os.lstat(path).st_mtime))
                except OSError:
                    pass
    registry.remove(*expired(entries, now))
    for folder in _job_folders(root):
        try:
            if now - os.stat(folder).st_mtime > registry.EMPTY_JOB_GRACE:
                os.rmdir(folder)  # only succeeds when empty
        except OSError:
            pass


_NAMED = re.compile(r"^\d{8}T\d{6}\.\d{3}Z-\d+(-\d+)?\.(?P<host>.+)\.json$")


def _host_of(path, name):
    """Return the host tag of the crash record at ``path``: from its name, else from the record.

    Raises:
        OSError: a record without a host in its name cannot be read.
    """
    named = _NAMED.match(name)
    if named:
        return named.group("host")
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd) as source:
        try:
            data = json.load(source)
        except ValueError:
            return None
    return registry.host_tag(data["host"]) if isinstance(data, dict) and data.get("host") else None


def expired(entries, now, keep=KEEP, max_age=MAX_AGE):
    """Return the paths to remove: all but the newest ``keep``, and any older than ``max_age``.

    Args:
        entries (list[tuple[str, float]]): (path, modification time in epoch seconds).
        now (float): epoch seconds.
        keep (int): how many records to keep at most.
        max_age (float): seconds; older records go whatever their number.

    Returns:
        list[str]: paths, newest first.
    """
    ordered = sorted(entries, key=lambda entry: entry[1], reverse=True)
    return [path for i, (path, mtime) in enumerate(ordered) if i >= keep or now - mtime > max_age]


def records(root):
    """Return every crash record under ``root``, newest first.

    Args:
        root (str): the runtime directory, already checked.

    Returns:
        list[dict]: the records, each with its ``path`` added.
    """
    found = []
    for folder in _job_folders(root):
        for name in _listdir(folder):
            if not name.endswith(".json"):
                continue
            path = os.path.join(folder, name)
            try:
                # registry.read: a FIFO or a symlink to an endless device must not hang `show`.
                data = registry.load(path, MAX_RECORD_BYTES + (64 << 10))
            except (OSError, ValueError):
                continue
            if not _readable(data):
                continue
            data["path"] = path
            found.append(data)
    found.sort(key=lambda r: r["time"], reverse=True)
    return found


def _readable(data):
    """Tell whether a crash record read back has the shape :func:`format_text` and :func:`format_list` need.

    A record is data that an edit or a cut-short write may have changed: one
    that does not fit is left out rather than failing ``autodbg show``.
    """
    none = type(None)
    if not registry.shaped(
        data,
        {"pid": (int,), "time": (int, float), "rank": (int, none), "role": (str, none),
         "traceback": (str, none), "argv": (list, none), "frames": (list, none)},
    ):  # fmt: skip
        return False
    try:
        time.localtime(data["time"])
    except (ValueError, OverflowError, OSError):  # NaN, or beyond what the C library takes
        return False
    frame_types = {
        "file": (object,),
        "line": (object,),
        "function": (object,),
        "locals": (dict, none),
    }
    return all(isinstance(arg, str) for arg in data.get("argv") or ()) and all(
        registry.shaped(frame, frame_types) for frame in data.get("frames") or ()
    )


def _job_folders(root):
    base = os.path.join(root, FOLDER)
    try:
        registry.checked_dir(base, create=False)
    except registry.RuntimeDirError:
        return []
    folders = []
    for name in _listdir(base):
        path = os.path.join(base, name)
        if os.path.isdir(path) and not os.path.islink(path):
            folders.append(path)
    return folders


def _listdir(path):
    try:
        return sorted(os.listdir(path))
    except OSError:
        return []


def describe(data):
    """Return ``rank N / <role> (pid P)`` or ``pid P`` for a record."""
    names = ([] if data.get("rank") is None else [f"rank {data['rank']}"]) + (
        [data["role"]] if data.get("role") else []
    )
    return f"{' / '.join(names)} (pid {data['pid']})" if names else f"pid {data['pid']}"


def format_text(data):
    """Return a crash record as the text ``autodbg show`` prints.

    The traceback as Python printed it, then each frame with its locals,
    innermost last (as in the traceback).
    """
    when = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(data["time"]))
    rank = (
        ""
        if data.get("world_size") is None or data.get("rank") is None
        else f" of {data['world_size']}"
    )
    thread = f", thread {data['thread']}" if data.get("thread") else ""
    lines = [
        f"crash of {describe(data)}{rank} on {data.get('host')}{thread}, job {data.get('job')}, at {when}",
        f"argv: {' '.join(data.get('argv') or [])}",
        f"record: {data.get('path', '-')}",
        "",
        data.get("traceback", "").rstrip("\n"),
        "",
        "Locals, innermost frame last:",
    ]
    if data.get("frames_omitted"):
        lines.append(f"  ({data['frames_omitted']} outer frames left out)")
    for frame in data.get("frames", ()):
        lines.append(f'  File "{frame["file"]}", line {frame["line"]}, in {frame["function"]}')
        for name, text in (frame.get("locals") or {}).items():
            lines.append(f"    {name} = {text}")
        if frame.get("locals_omitted"):
            lines.append(f"    ({frame['locals_omitted']} more not recorded)")
        elif not frame.get("locals"):
            lines.append("    (no locals)")
    if data.get("trace") and isinstance(data["trace"], list):
        lines += ["", "Last traced events of the thread (AUTODBG_TRACE), oldest first:"]
        lines += [str(event) for event in data["trace"]]
    if data.get("note"):
        lines.append(f"note: {data['note']}")
    return "\n".join(lines)


def format_list(found):
    """Return one line per crash record (``autodbg show --list``), newest first."""
    rows = [("TIME", "JOB", "RANK", "PID", "HOST", "EXCEPTION", "WHERE")]
    for data in found:
        rows.append(
            (
                time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(data["time"])),
                str(data.get("job")),
                "-" if data.get("rank") is None else str(data["rank"]),
                str(data["pid"]),
                str(data.get("host")),
                str(data.get("exception")),
                str(data.get("where")),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths)) + "  " + row[-1] for row in rows
    )
