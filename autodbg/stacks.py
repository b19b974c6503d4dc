"""Stack dumps: each process's side of the stack signal, and the collector behind ``autodbg stack``.

The process's side
    At start-up, :mod:`autodbg.hooks` registers the stack signal with
    ``faulthandler`` on stderr: nothing else is imported or opened. When the
    program imports ``torch.distributed`` (:func:`autodbg.torch_hooks.patch`),
    :func:`register` moves the dump to a per-process file,
    ``<runtime dir>/<job>/<pid>.stack``, and starts one daemon thread that
    copies each new dump from that file to stderr. The file starts with a
    one-line JSON header (pid, rank, job, the main thread's id, the signal),
    so it is also how ``autodbg stack --all`` finds every process of a job
    without an open session; it is rewritten in place when a rank learns its
    rank late (:func:`update_identity`). A forked child (a DataLoader worker)
    gets a file of its own right after the fork (``os.register_at_fork``).
    ``import torch`` imports ``torch.distributed``, so every process that
    imports torch registers: ranks, their spawned children, torchrun itself
    (in a job folder of its own, ``pg<pgid>``).

The richer Python path (``autodbg stack --locals``)
    The CLI leaves ``<pid>.stack.want`` before it signals; the same thread,
    seeing a new dump and the request, walks ``sys._current_frames()`` and
    writes ``<pid>.stack.locals`` (JSON) with each frame's locals as short,
    safe reprs (:func:`short_repr`). This needs a Python thread to run: a main
    thread blocked in a collective or a sleep releases the GIL, one holding
    it in C code does not, and then the dump comes without locals.
    asyncio tasks are not listed.

The Flight Recorder (``autodbg stack --collectives``, the hang watchdog)
    With ``<pid>.stack.fr-want`` beside the file when a new dump comes, the
    same thread writes the rank's record of its collectives to
    ``<pid>.stack.fr`` (:func:`autodbg.collectives.answer`).

``autodbg cast``
    The same thread also looks, with one ``stat`` a poll, for
    ``<pid>.stack.cast``, a request of ``autodbg cast``, and answers it
    (:func:`autodbg.readonly.answer`): no signal, so no dump on stderr.

Why a file first and stderr second, and not the other way round
    ``faulthandler`` writes to one file descriptor, from a C signal handler
    that runs even while the main thread is blocked in C (a gloo
    ``all_reduce``, a long matmul) or holds the GIL there. The file is what the
    CLI needs, so it gets the C path; stderr, which a person reads, gets the
    copy as soon as any Python thread can run (within :data:`COPY_POLL`
    seconds; every blocking torch call releases the GIL). Rejected:
    a pipe that a thread tees to both (the file would then wait for the GIL
    too); ``chain=True`` into a Python-level handler (Python runs signal
    handlers in the main thread only, after the C call returns);
    ``signal.set_wakeup_fd`` to wake the copier (one per process, and asyncio
    owns it); a file for every process at start-up (a directory check, an
    ``identity`` import and a file in every ``python -c``: start-up must stay
    as it is). The thread polls (10 looks a second, one ``fstat`` each):
    nothing else wakes it on the signal without those costs.

The CLI's side
    :func:`processes` lists the live ``.stack`` files; :func:`collect` signals
    every target at once and polls the files in one loop until each dump is
    complete or the deadline passes; :func:`parse` reads ``faulthandler``'s
    text; a process in a debugger session shows, for the session's thread,
    the frames the session debugs, from its record (:func:`show_session`), not
    its prompt's; :func:`groups` merges processes whose main threads (or
    sessions) stand in the same place; :func:`render` prints the groups, odd
    ones out first.
"""

import json
import os
import re
import sys
import time

from autodbg import guard, registry

COPY_POLL = 0.1  # seconds between the process's thread's looks at its dump file
COLLECT_POLL = 0.005  # seconds between the CLI's looks at the dump files
SETTLED = 0.01  # seconds a dump file must stay the same size to count as complete
# bytes: the stack file's JSON header line, padded so that it can be rewritten in place
HEADER = 1024

_fd = None  # this process's dump file, once registered
_NONE = type(None)
# The types of the stack file header's fields the CLI relies on (None: absent).
HEADER_TYPES = {
    **registry.IDENTITY_TYPES,
    "signal": (int,),
    "registered": (int, float),
    "main_thread": (int, _NONE),
}
_file = None  # its path


# -- in the process -------------------------------------------------------------------------


def register():
    """Send this process's stack dumps to its file in the runtime directory, and to stderr.

    Called when ``torch.distributed`` is imported. Does nothing when
    ``AUTODBG_STACK_SIGNAL=off`` or when it already ran. Never raises: a
    failure is one ``autodbg:`` line, and dumps stay on stderr only.
    """
    from autodbg import config

    if _fd is not None or config.current().stack_signal is None:
        return
    try:
        _open_and_register()
    except Exception as error:
        from autodbg.messages import say

        say(f"stack dumps go to stderr only: {type(error).__name__}: {error}")
        return
    import atexit

    os.register_at_fork(after_in_child=_after_fork)
    atexit.register(_unregister)


def _open_and_register(parent_pid=None):
    global _fd, _file
    import faulthandler
    import threading

    from autodbg import config

    cfg = config.current()
    folder = registry.job_dir(registry.runtime_dir(cfg.dir), _identity()["job"])
    path = os.path.join(folder, f"{os.getpid()}.stack")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND | os.O_NOFOLLOW, 0o600)
    os.write(fd, b" " * (HEADER - 1) + b"\n")
    faulthandler.register(cfg.stack_signal, file=fd, all_threads=True, chain=False)
    if _fd is not None:
        os.close(_fd)
    _fd, _file = fd, path
    _header["parent_pid"] = parent_pid
    _header["main_thread"] = threading.main_thread().ident
    _header["signal"] = cfg.stack_signal
    _header["registered"] = time.time()
    update_identity()
    threading.Thread(target=_serve, args=(fd, HEADER), name="autodbg-stacks", daemon=True).start()


_header: dict = {}  # the stack file header fields of this process, beside its identity


def _identity():
    from autodbg import identity

    me = identity.current
    fields = ("rank", "local_rank", "world_size", "host", "job", "role", "parent_pid")
    return {name: getattr(me, name) for name in fields}


def update_identity():
    """Rewrite this process's header with what :mod:`autodbg.identity` knows now.

    For ranks that learn their rank late (``init_process_group(rank=...)`` in an
    ``mp.spawn`` program). The header is the file's first :data:`HEADER` bytes,
    padded, rewritten in place through a second descriptor (dumps append
    through the first). Never raises.
    """
    if _file is None:
        return
    try:
        header = dict(
            _identity(), pid=os.getpid(), **{k: v for k, v in _header.items() if v is not None}
        )
        line = json.dumps(header).encode()[: HEADER - 1]
        fd = os.open(_file, os.O_WRONLY | os.O_NOFOLLOW)
        try:
            os.pwrite(fd, line.ljust(HEADER - 1) + b"\n", 0)
        finally:
            os.close(fd)
    except Exception as error:
        from autodbg.messages import say

        say(f"could not update the stack file's header: {type(error).__name__}: {error}")


@guard.protect("the stack-dump thread")
def _serve(fd, done):
    # Copies new dumps to stderr and answers --locals requests. Polls: nothing
    # in the standard library wakes a thread from a signal without taking the
    # process's one wakeup fd (see the module docstring). An error is one line
    # (autodbg.guard) and ends this thread only: dumps still reach the file.
    # It also answers `autodbg cast`: one stat a poll for its request (autodbg.cast).
    request = _file + ".cast"
    while fd == _fd:
        size = os.fstat(fd).st_size
        grew = done < size
        while done < size:
            chunk = os.pread(fd, size - done, done)
            if not chunk:
                break
            try:
                os.write(2, chunk)
            except OSError:
                return  # stderr is closed or its reader gone: nobody to copy to, or to tell
            done += len(chunk)
        if grew and os.path.exists(_file + ".want"):
            guard.call("the stack-dump thread's --locals answer", _write_locals)
        if grew and os.path.exists(_file + ".fr-want"):
            guard.call("the stack-dump thread's flight recorder answer", _answer_collectives)
        if os.path.exists(request):
            guard.call("the stack-dump thread's cast answer", _answer_cast, request)
        time.sleep(COPY_POLL)


def _answer_collectives():
    from autodbg import collectives  # only when the CLI or the hang watchdog asks

    collectives.answer(_file)


def _answer_cast(request):
    from autodbg import readonly  # only when a cast comes

    readonly.answer(request)


def _write_locals():
    """Answer ``autodbg stack --locals``: every thread's frames with short reprs of their locals."""
    registry.remove(_file + ".want")
    threads = {}
    for ident, frame in sys._current_frames().items():
        frames = []
        while frame is not None:
            module_level = frame.f_code.co_name == "<module>"  # its locals are the module's globals
            names = [] if module_level else list(frame.f_locals.items())[:MAX_LOCALS]
            frames.append(
                {
                    "file": frame.f_code.co_filename,
                    "line": frame.f_lineno,
                    "function": frame.f_code.co_name,
                    "locals": {name: short_repr(value) for name, value in names},
                }
            )
            frame = frame.f_back
        threads[f"0x{ident:016x}"] = frames[::-1]
    registry.write(_file + ".locals", threads)


MAX_LOCALS = 30  # locals shown per frame
MAX_REPR = 80  # characters per repr


def short_repr(value):
    """Return a repr of ``value`` of at most :data:`MAX_REPR` characters, safe from a side thread.

    Only built-in scalars and containers are repr'd (through :mod:`reprlib`, which
    bounds their size); tensors are described by shape and dtype and any other
    object by its type: a program's own ``__repr__`` could take a lock that its
    main thread holds, or be slow.
    """
    text = _SafeRepr().repr(value)
    return text if len(text) <= MAX_REPR else text[: MAX_REPR - 3] + "..."


def _describe(value):
    kind = type(value)
    if kind.__module__ == "torch" and kind.__name__ in ("Tensor", "Parameter"):
        return f"tensor(shape={tuple(value.shape)}, dtype={value.dtype}, device={value.device})"
    return f"<{kind.__module__}.{kind.__qualname__} object>"


_SAFE = (int, float, bool, complex, str, bytes, type(None), list, tuple, dict, set, frozenset)


def _safe_repr_class():
    import reprlib

    class SafeRepr(reprlib.Repr):
        def __init__(self):
            super().__init__()
            self.maxstring = self.maxother = MAX_REPR

        def repr1(self, x, level):
            return super().repr1(x, level) if type(x) in _SAFE else _describe(x)

    return SafeRepr


def _SafeRepr():
    global _SafeRepr
    _SafeRepr = _safe_repr_class()  # reprlib only when a --locals request comes
    return _SafeRepr()


def _after_fork():
    # The child shares the parent's file descriptor: its dumps would land in
    # the parent's file. It gets its own, and its own thread.
    try:
        _open_and_register(parent_pid=os.getppid())
    except Exception as error:
        from autodbg.messages import say

        say(f"stack dumps of this child go to its parent's file: {type(error).__name__}: {error}")


def remove_own_file():
    """Remove this process's stack file and its companions, if it registered one."""
    if _file is not None:
        companions = (".want", ".locals", ".cast", ".fr-want", ".fr")
        registry.remove(_file, *(_file + suffix for suffix in companions))


def _unregister():
    """At exit: remove this process's stack file, and the files of this host's dead processes.

    The dead ones are workers and children that could not clean up after
    themselves: killed by a signal's default action (torchrun's SIGTERM to its
    workers, SIGKILL) or ended with ``os._exit`` (multiprocessing children,
    DataLoader workers). Their parent outlives them, so their files go when it
    exits, as the next ``autodbg ls`` or ``autodbg stack`` would remove them.
    """
    if _file is None:
        return
    from autodbg import config

    remove_own_file()

    def sweep():
        root = registry.runtime_dir(config.current().dir)
        registry.sessions(root)
        processes(root)

    guard.call("the exit clean-up", sweep)


# -- in the CLI -----------------------------------------------------------------------------


def processes(root, job=None):
    """List this host's live processes that have a stack file under ``root``; remove dead ones'.

    A file is live when its process exists and started before the file was
    made (so a recycled pid does not pass for it). Files of other hosts (a
    runtime directory shared over NFS) are neither listed nor removed: their
    pids mean nothing here (:func:`autodbg.registry.here`).

    Args:
        root (str): the runtime directory.
        job (str | None): only this job's processes.

    Returns:
        list[dict]: the files' headers plus ``path``, sorted by job, rank, pid.
    """
    found = []
    for name in registry._listdir(root):
        folder = os.path.join(root, name)
        if (job is not None and name != job) or not os.path.isdir(folder) or os.path.islink(folder):
            continue
        for entry in registry._listdir(folder):
            if not entry.endswith(".stack"):
                continue
            path = os.path.join(folder, entry)
            try:
                # The header is the first line; a file that is no stack file (a FIFO,
                # a symlink to an endless device) must not hang the CLI: registry.read.
                first = registry.read(path, HEADER, whole=False).partition(b"\n")[0]
                header = registry.parse(first)
            except (OSError, ValueError):
                continue
            if not registry.shaped(header, HEADER_TYPES) or not registry.here(header):
                continue
            pid = header["pid"]
            started = registry.process_started(pid)
            if started is None or started > header.get("registered", 0) + 1:
                registry.remove(path)
                continue
            header["path"] = path
            found.append(header)
    found.sort(key=lambda h: (h["job"], -1 if h.get("rank") is None else h["rank"], h["pid"]))
    return found


def collect(targets, timeout, with_locals=False):
    """Signal every target at once and read the dump each writes into its file.

    A target is signalled only when it has a handler installed for its stack
    signal (:func:`autodbg.registry.catches`): a process that took the pid of a
    dead one, or never loaded autodbg, would be ended by SIGUSR1's default
    action. It gets an ``error`` instead.

    One loop polls all the files every :data:`COLLECT_POLL` seconds; a dump is
    complete when its file grew, ends with a newline and stayed that size for
    :data:`SETTLED` seconds (faulthandler's handler writes it in well under a
    millisecond). With ``with_locals``, the loop also waits for the process's
    Python-side answer (:func:`_write_locals`, which needs a Python thread to
    run). Blocks at most ``timeout`` seconds in all.

    Args:
        targets (list[dict]): headers from :func:`processes`.
        timeout (float): seconds for all of them together.
        with_locals (bool): ask for each frame's locals too.

    Returns:
        list[dict]: one per target: its header fields, ``answered`` (bool),
        ``seconds`` (how long its dump took, None without one), ``dump``
        (the new text, or the last dump in its file when it did not answer),
        ``threads`` (see :func:`parse`; frames get ``locals`` when asked and
        answered in time), when asked ``locals`` (bool: they came), and for a
        process in a debugger session ``session`` (see :func:`show_session`).
    """
    start = time.monotonic()
    pending = {}
    results = []
    for target in targets:
        result = dict(target, answered=False, seconds=None, dump="", threads=[])
        if with_locals:
            result["locals"] = False
        results.append(result)
        if not registry.catches(target["pid"], target["signal"]):
            result["error"] = (
                f"no handler for {registry.signal_name(target['signal'])} installed (autodbg is "
                "not loaded there, the program reset it, or the pid is another process's now); "
                "not signalled, as the signal would end it"
            )
            continue
        try:
            offset = os.stat(target["path"]).st_size
            if with_locals:
                registry.remove(target["path"] + ".locals")
                with open(target["path"] + ".want", "w"):
                    pass
            os.kill(target["pid"], target["signal"])
        except OSError as error:
            result["error"] = error.strerror
            continue
        pending[target["pid"]] = [result, offset, offset, start]
    deadline = start + timeout
    while pending:
        now = time.monotonic()
        for pid, state in list(pending.items()):
            result, offset, last_size, since = state
            if result["answered"]:  # the dump came; waiting for the locals
                if os.path.exists(result["path"] + ".locals"):
                    result["locals"] = True
                    del pending[pid]
                continue
            try:
                size = os.stat(result["path"]).st_size
            except OSError:
                size = last_size
            if size != last_size:
                state[2], state[3] = size, now
                continue
            if size > offset and now - since >= SETTLED:
                text = _read(result["path"], offset)
                if text.endswith("\n"):
                    result.update(answered=True, seconds=since - start, dump=text)
                    if not with_locals:
                        del pending[pid]
        if not pending or now > deadline:
            break
        time.sleep(COLLECT_POLL)
    sessions = _session_records(results)
    for result in results:
        if not result["answered"]:
            result["dump"] = last_dump(_read(result["path"], 0))
        result["threads"] = parse(result["dump"], result.get("main_thread"))
        if result["pid"] in sessions:
            show_session(result, sessions[result["pid"]])
        if result.get("locals"):
            _add_locals(result["threads"], result["path"] + ".locals")
        if with_locals:
            registry.remove(result["path"] + ".want", result["path"] + ".locals")
        result.pop("path", None)
    return results


def _session_records(results):
    # pid -> session record, from the runtime directories the targets' stack files are in.
    roots = {os.path.dirname(os.path.dirname(r["path"])) for r in results}
    return {record["pid"]: record for root in roots for record in registry.sessions(root)}


_PACKAGES = re.compile(r"/(?:site|dist)-packages/(?:autodbg|IPython|ipdb|prompt_toolkit)/")


def _machinery(path):
    # autodbg's, the debugger's and its prompt's code (autodbg installed or from a checkout).
    return bool(_PACKAGES.search(path)) or path.startswith(_AUTODBG_DIR)


_AUTODBG_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def _stdlib(path):
    global _STDLIB
    if _STDLIB is None:
        import sysconfig

        _STDLIB = sysconfig.get_paths()["stdlib"] + os.sep
    return path.startswith("<frozen ") or (path.startswith(_STDLIB) and "-packages" not in path)


_STDLIB = None  # the standard library's directory, once asked


def show_session(result, record):
    """Show a process in a debugger session as the session sees it, not as its prompt runs.

    The session's thread (the record's ``thread_id``) gets the frames the session
    debugs (the record's ``frames``: the traceback of a post-mortem session, the
    stack of a ``breakpoint()`` where it stopped) and comes first; other threads
    lose autodbg's, IPython's and prompt_toolkit's frames, and threads of only
    those (and the standard library: the prompt's and the socket's threads)
    are left out.

    Args:
        result (dict): one of :func:`collect`'s, with its ``threads``; changed in place.
        record (dict): the process's session record (:mod:`autodbg.session`).
    """
    session = {
        name: record.get(name) for name in ("reason", "exception", "where", "state", "thread_id")
    }
    result["session"] = session
    threads = []
    for thread in result["threads"]:
        if thread["id"] == record.get("thread_id"):
            if record.get("frames") is not None:
                thread["frames"] = [dict(frame) for frame in record["frames"]]
                thread["truncated"] = bool(record.get("frames_omitted"))
            thread["session"] = session
        frames = thread["frames"]
        cut = next((i for i, f in enumerate(frames) if _machinery(f["file"])), None)
        if cut is not None:
            if "session" not in thread and all(_stdlib(f["file"]) for f in frames[:cut]):
                continue  # the prompt's or the socket's thread
            thread["frames"] = frames[:cut]
        threads.append(thread)
    threads.sort(key=lambda t: ("session" not in t, not t["main"]))
    result["threads"] = threads


def _add_locals(threads, path):
    # The snapshot came a little after the dump: a frame gets the locals only
    # where the function at its depth is still the same.
    try:
        with open(path) as source:
            snapshot = json.load(source)
    except (OSError, ValueError):
        return
    for thread in threads:
        frames = snapshot.get(thread["id"], [])
        for frame, seen in zip(thread["frames"], frames):
            if (frame["file"], frame["function"]) != (seen["file"], seen["function"]):
                break
            frame["locals"] = seen["locals"]


def _read(path, offset):
    try:
        with open(path, "rb") as source:
            source.seek(offset)
            return source.read().decode("utf-8", "replace")
    except OSError:
        return ""


def last_dump(text):
    """Return the last complete dump in a stack file's ``text`` (header line included or not)."""
    lines = [line for line in text.splitlines(keepends=True) if not line.startswith("{")]
    starts = [
        i
        for i, line in enumerate(lines)
        if _THREAD.match(line) and line.startswith(("Thread", "Current"))
    ]
    # A dump starts at a thread line that follows no blank line (a blank line
    # separates the threads within one dump).
    firsts = [i for i in starts if i == 0 or lines[i - 1].strip()]
    return "".join(lines[firsts[-1] :]) if firsts else ""


_THREAD = re.compile(r"^(Current thread|Thread) (0x[0-9a-f]+) \(most recent call first\):")
_FRAME = re.compile(r'^  File "(.*)", line (\d+) in (.*)$')


def parse(text, main_thread=None):
    """Parse ``faulthandler``'s dump of all threads.

    Args:
        text (str): one dump (``Thread 0x... (most recent call first):`` blocks).
        main_thread (int | None): the main thread's id (``threading.main_thread().ident``).

    Returns:
        list[dict]: one per thread, the main thread first: ``id`` (hex str), ``main``,
        ``current`` (the thread that ran the signal handler), ``frames``: outermost
        call first, each ``{"file", "line", "function"}``; ``truncated`` when
        faulthandler cut a deep stack (``...``).
    """
    threads = []
    for line in text.splitlines():
        match = _THREAD.match(line)
        if match:
            ident = int(match.group(2), 16)
            threads.append(
                {
                    "id": match.group(2),
                    "main": ident == main_thread,
                    "current": match.group(1) == "Current thread",
                    "frames": [],
                    "truncated": False,
                }
            )
            continue
        if not threads:
            continue
        frame = _FRAME.match(line)
        if frame:
            threads[-1]["frames"].append(
                {"file": frame.group(1), "line": int(frame.group(2)), "function": frame.group(3)}
            )
        elif line.strip() == "...":
            threads[-1]["truncated"] = True
    for thread in threads:
        thread["frames"].reverse()
    # The copier thread of :func:`register` is autodbg's own, not the program's.
    threads = [
        t
        for t in threads
        if not any(
            f["function"] == "_serve" and f["file"].endswith("stacks.py") for f in t["frames"]
        )
    ]
    threads.sort(key=lambda t: not t["main"])
    return threads


def _main_frames(result):
    # The first thread's: the main thread, or the thread of a debugger session.
    threads = result["threads"]
    if not threads:
        return ()
    frames = tuple((f["file"], f["line"], f["function"]) for f in threads[0]["frames"])
    return ("session" in threads[0], *frames)


def groups(results):
    """Merge processes whose main threads have the same stack (file, line, function of each frame).

    For a process in a debugger session, the stack of the session's thread
    (:func:`show_session`), which never merges with one outside a session.

    Args:
        results (list[dict]): from :func:`collect`.

    Returns:
        list[list[dict]]: the groups, odd ones out first (fewest members, then lowest rank);
        processes that did not answer come last, one group each.
    """
    merged = {}
    silent = []
    for result in results:
        if not result["answered"]:
            silent.append([result])
            continue
        merged.setdefault(_main_frames(result), []).append(result)
    ordered = sorted(merged.values(), key=lambda g: (len(g), min(_order(r) for r in g)))
    return ordered + silent


def _order(result):
    return (result.get("rank") is None, result.get("rank") or 0, result["pid"])


def who(members):
    """Name a group: ``ranks 0,2,3 (pids 11, 13, 14)``, ``rank 1 (pid 12)``, ``pid 12``.

    A group with a member of another host names the hosts:
    ``ranks 0,1,2,3 (pids 11, 12 on node0; 21, 22 on node1)``.
    """
    members = sorted(members, key=_order)
    pids = ", ".join(str(r["pid"]) for r in members)
    here = os.uname().nodename
    hosts = list(dict.fromkeys(r.get("host") or here for r in members))
    if hosts != [here]:
        pids = "; ".join(
            ", ".join(str(r["pid"]) for r in members if (r.get("host") or here) == host)
            + f" on {host}"
            for host in hosts
        )
    ranks = [r.get("rank") for r in members]
    roles = {r.get("role") for r in members} - {None}
    if all(rank is not None for rank in ranks):
        label = f"rank{'s' if len(ranks) > 1 else ''} {','.join(str(rank) for rank in ranks)}"
        if roles:
            label += f" / {', '.join(sorted(roles))}"
        return f"{label} (pid{'s' if len(members) > 1 else ''} {pids})"
    return f"pid{'s' if len(members) > 1 else ''} {pids}"


def _locals_lines(members, thread, index):
    # One line per local; when the members of a group disagree, each value with whom it belongs to.
    # A group of several shows its main threads only, whose frames line up one for one.
    values = {}
    for member in members:
        frames = (thread if len(members) == 1 else member["threads"][0])["frames"]
        for name, value in frames[index].get("locals", {}).items():
            values.setdefault(name, {}).setdefault(value, []).append(member)
    lines = []
    for name, seen in values.items():
        if len(seen) == 1:
            lines.append(f"        {name} = {next(iter(seen))}")
        else:
            told = "; ".join(f"{value} ({_short_who(owners)})" for value, owners in seen.items())
            lines.append(f"        {name} = {told}")
    return lines


def _session_note(members, thread):
    # ", in a debugger session (post-mortem: IndexError: ...)", with whose when the members differ.
    if "session" not in thread:
        return ""
    seen = {}
    for member in members:
        session = member.get("session") or thread["session"]
        if session["reason"] == "exception":
            what = f"post-mortem: {session['exception']}"
        else:
            what = "stopped at a breakpoint"
        if session.get("state") == "waiting":
            what += "; waiting for a client"
        seen.setdefault(what, []).append(member)
    if len(seen) == 1:
        return f", in a debugger session ({next(iter(seen))})"
    told = "; ".join(f"{what} ({_short_who(owners)})" for what, owners in seen.items())
    return f", in debugger sessions ({told})"


def _short_who(members):
    return who(members).split(" (")[0]


def render(results, timeout):
    """Return the text ``autodbg stack`` prints: one block per group, odd ones out first.

    Each block shows the main thread's stack as a Python traceback does
    (outermost call first, with the source line when this machine has the
    file); a block of one process shows its other threads too.

    Args:
        results (list[dict]): from :func:`collect`.
        timeout (float): the collection's bound in seconds, for the silent ones' line.
    """
    import linecache

    out = []
    for members in groups(results):
        first = members[0]
        if not first["answered"]:
            why = first.get("error") or f"no dump within {timeout:g} s"
            out.append(f"{who(members)}: {why}")
            if first["threads"]:
                out.append("  its last dump in the runtime directory:")
            else:
                out.append("")
                continue
        else:
            out.append(f"{who(members)}:")
        threads = first["threads"] if len(members) == 1 else first["threads"][:1]
        for thread in threads:
            name = "main thread" if thread["main"] else f"thread {thread['id']}"
            out.append(f"  {name} (most recent call last){_session_note(members, thread)}:")
            if thread["truncated"]:
                out.append("    ...")
            for index, frame in enumerate(thread["frames"]):
                out.append(
                    f'    File "{frame["file"]}", line {frame["line"]}, in {frame["function"]}'
                )
                source = linecache.getline(frame["file"], frame["line"]).strip()
                if source:
                    out.append(f"      {source}")
                out.extend(_locals_lines(members, thread, index))
        if first.get("locals") is False and first["answered"]:
            out.append(
                f"  (no locals: no Python thread of pid {first['pid']} ran within {timeout:g} s)"
            )
        others = len(first["threads"]) - len(threads)
        if others:
            out.append(
                f"  (+ {others} other thread{'s' if others > 1 else ''} each; --json shows them)"
            )
        out.append("")
    return "\n".join(out)
