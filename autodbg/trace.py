"""Zero-code tracing of chosen functions (``AUTODBG_TRACE=pkg.module:func,...``).

Each traced call's events (the call with its arguments, each line executed,
new and changed locals, the return value, an exception raised or passing
through, a call ended by an exception) go to ``<runtime dir>/<job>/trace-<pid>.txt``
and into a per-thread ring of the last :data:`RING` events, which a session's
``trace`` command shows for its own thread and a crash record keeps
(:data:`KEPT` of them). The text is PySnooper's (``Starting var:..``,
``New var:.......``, ``Modified var:..``, ``Return value:..``, ``Exception:.....``,
``Call ended by exception``; values as PySnooper's ``get_shortish_repr``,
cut to :data:`MAX_VALUE_CHARS` in the middle), without colours, so that
what PySnooper users read is what they get, with no decorator.

Cheap events, lazy text: PySnooper's cost is its text (a repr of every local
at every line, source look-ups, a write per line). Here an event is one tuple
appended to a list: its kind, code object, line, the frame's id and a copy of
the frame's locals dict (built-in containers of up to :data:`MAX_COPY` items
copied too, so that their state then is what gets shown). The events are
turned into text and written :data:`BATCH` at a time, when the outermost
traced call of a thread ends, before a session shows them or a crash record
keeps them, and at exit: a crash loses nothing (the session's ``trace`` and
the crash record flush first), a process killed by a signal loses at most
:data:`BATCH` events. Between two events of a frame, a value that is the same
object as before is not repr'd again: only built-in containers are compared
by their repr (as PySnooper compares everything), so an object of another
type changed in place (a tensor's ``add_``) is not reported as modified; a
tensor is shown by shape, dtype and device, never repr'd (that would copy
it from the device).

How the events are caught, untraced code left alone:

* Python 3.12+: ``sys.monitoring`` (PEP 669) local events (``PY_START``,
  ``PY_RESUME``, ``LINE``, ``PY_RETURN``, ``PY_YIELD``) on the target code
  objects only; no other code is instrumented. Exceptions (``RAISE``,
  ``PY_UNWIND``) cannot be local events: they are set for the whole process,
  and an exception raised in untraced code costs one dict look-up in
  :func:`_raised`; code that raises nothing pays nothing.
* Python 3.11: the function is replaced (:func:`autodbg.targets.replace`) by a
  wrapper that sets ``sys.settrace`` for the duration of its call only, with a
  global trace function that returns the local one for target frames and None
  for the others, which then get no line events. Untraced code called from a
  traced call pays one Python call per function call (the ``call`` event); code
  outside traced calls, and other threads, run with no trace function at all.
  A call made while another trace function is set (coverage, a debugger's
  step) runs untraced. A generator function's body runs after its wrapper has
  returned, so on 3.11 it is not traced (one line says so).

Start-up path (:func:`watch` runs at start-up when ``AUTODBG_TRACE`` is set):
imports only ``sys``, ``os`` (loaded before any ``.pth`` line runs), ``_thread`` (built in) and :mod:`autodbg.targets`.
"""

import _thread
import os
import sys

RING = 1000  # events kept per thread for its session (formatted text)
KEPT = 50  # events of the crashing thread a crash record keeps
SHOWN = 20  # events the `trace` command shows by default
BATCH = 256  # raw events formatted and written at once
MAX_COPY = 100  # a list, dict, set or bytearray up to this length is copied at each event
MAX_VALUE_CHARS = 100  # PySnooper's default max_variable_length

CALL, LINE, RETURN, EXCEPTION, UNWIND = range(5)
_KINDS = ("call", "line", "return", "exception")

_codes: dict = {}  # code object -> "module:qualname", the traced functions
_pending: list = []  # raw events not formatted yet, all threads in order (one list object, always)
_rings: dict = {}  # thread ident -> collections.deque of formatted events
_depth: dict = {}  # thread ident -> traced frames running in it (3.12+)
_frames: dict = {}  # (thread ident, frame id) -> ({name: value}, {name: text}), as last formatted
_levels: dict = {}  # thread ident -> traced frames open in the formatted events (indentation)
_lock = _thread.allocate_lock()  # one thread formats at a time
_formatting = None  # ident of the thread formatting now: a traced __repr__ must not re-enter
_last_thread = None  # thread ident of the last event written, for the file's thread lines
_out = None  # the trace file's descriptor; False once it could not be opened
_path = None
_get_ident = _thread.get_ident
_getframe = sys._getframe
_COPIES = {list: list.copy, dict: dict.copy, set: set.copy, bytearray: bytearray.copy}
_COPIED_TYPES = frozenset(_COPIES)
_tool = None  # sys.monitoring tool id (3.12+)
_started = False
_RETURNS = ()  # 3.11: the opcodes of a frame that returns rather than unwinds


def watch(pairs, after_import):
    """Trace the functions named by ``pairs`` from the time their modules define them.

    Called by :func:`autodbg.hooks.install` at start-up. Never blocks.

    Args:
        pairs (Iterable[tuple[str, str]]): ``(module, qualname)`` pairs, as
            :func:`autodbg.config.setting` gives them for ``trace``.
        after_import (Callable[[str, Callable], None]): :func:`autodbg.hooks.after_import`.
    """
    from autodbg import targets

    targets.watch(pairs, _found, after_import, "AUTODBG_TRACE")


def _found(owner, name, function):
    """``found`` of :func:`autodbg.targets.watch`: start tracing ``function``."""
    code = function.__code__
    if code in _codes:
        return
    _start()
    _codes[code] = f"{function.__module__}:{function.__qualname__}"
    if _tool is not None:
        monitoring = sys.monitoring
        events = monitoring.events
        monitoring.set_local_events(
            _tool,
            code,
            events.PY_START | events.PY_RESUME | events.LINE | events.PY_RETURN | events.PY_YIELD,
        )
        return
    if code.co_flags & 0x2A0:  # CO_GENERATOR | CO_COROUTINE | CO_ASYNC_GENERATOR
        from autodbg.messages import say

        say(
            f"AUTODBG_TRACE: {_codes[code]} is a generator or coroutine: traced on Python 3.12+ only"
        )
        return
    from autodbg import targets

    targets.replace(owner, name, _wrapped(function))


def _start():
    """Set up the event callbacks (3.12+) or the return opcodes (3.11), and the flush at exit."""
    global _started, _tool, _RETURNS
    if _started:
        return
    _started = True
    import atexit

    atexit.register(flush)
    if not hasattr(sys, "monitoring"):
        import opcode

        _RETURNS = tuple(opcode.opmap[name] for name in ("RETURN_VALUE", "YIELD_VALUE"))
        return
    monitoring = sys.monitoring
    events = monitoring.events
    free = [tool for tool in (4, 3) if monitoring.get_tool(tool) is None]
    if not free:
        raise RuntimeError("no free sys.monitoring tool id (3 and 4 are taken)")
    _tool = free[0]
    monitoring.use_tool_id(_tool, "autodbg trace")
    for event, callback in (
        (events.PY_START, _started_call),
        (events.PY_RESUME, _started_call),
        (events.LINE, _line),
        (events.PY_RETURN, _returned),
        (events.PY_YIELD, _returned),
        (events.RAISE, _raised),
        (events.PY_UNWIND, _unwound),
    ):
        monitoring.register_callback(_tool, event, callback)
    monitoring.set_events(_tool, events.RAISE | events.PY_UNWIND)


def _snapshot(names):
    """Return a copy of a frame's locals, small built-in containers copied too."""
    values = dict(names)
    if _COPIED_TYPES.isdisjoint(map(type, values.values())):
        return values  # the usual case, told in C: no Python loop over the locals
    for name, value in values.items():
        copy = _COPIES.get(type(value))
        if copy is not None and len(value) <= MAX_COPY:
            values[name] = copy(value)
    return values


# Python 3.12+: sys.monitoring callbacks, run in the target frame's thread.


def _started_call(code, offset):
    frame = _getframe(1)
    ident = _get_ident()
    _depth[ident] = _depth.get(ident, 0) + 1
    _pending.append((ident, CALL, code, frame.f_lineno, id(frame), _snapshot(frame.f_locals), None))


def _line(code, line):
    frame = _getframe(1)
    _pending.append((_get_ident(), LINE, code, line, id(frame), _snapshot(frame.f_locals), None))
    if len(_pending) >= BATCH:
        flush()


def _returned(code, offset, value):
    frame = _getframe(1)
    ident = _get_ident()
    _pending.append(
        (ident, RETURN, code, frame.f_lineno, id(frame), _snapshot(frame.f_locals), value)
    )
    _ended(ident)


def _raised(code, offset, error):
    if code not in _codes:
        return
    frame = _getframe(1)
    _pending.append(
        (_get_ident(), EXCEPTION, code, frame.f_lineno, id(frame), _snapshot(frame.f_locals), error)
    )


def _unwound(code, offset, error):
    if code not in _codes:
        return
    frame = _getframe(1)
    ident = _get_ident()
    _pending.append(
        (ident, UNWIND, code, frame.f_lineno, id(frame), _snapshot(frame.f_locals), None)
    )
    _ended(ident)


def _ended(ident):
    depth = _depth.get(ident, 1) - 1
    _depth[ident] = depth
    if depth <= 0 or len(_pending) >= BATCH:
        flush()


# Python 3.11: a wrapper that traces its own call.


def _wrapped(function):
    """Return ``function`` wrapped so that its calls are traced (3.11)."""
    import functools

    gettrace, settrace = sys.gettrace, sys.settrace

    @functools.wraps(function)
    def traced(*args, **kwargs):
        if gettrace() is not None:
            # Ours: a traced call runs already and sees this one's frame; or another
            # tool's (coverage, a debugger stepping), which keeps its trace function.
            return function(*args, **kwargs)
        settrace(_global)
        try:
            return function(*args, **kwargs)
        finally:
            settrace(None)
            flush()

    return traced


def _global(frame, event, arg):
    # Only "call" events come here: a target frame gets the local trace function, others none.
    code = frame.f_code
    if code not in _codes:
        return None
    _pending.append(
        (_get_ident(), CALL, code, frame.f_lineno, id(frame), _snapshot(frame.f_locals), None)
    )
    return _local


def _local(frame, event, arg):
    if event == "line":
        kind = LINE
    elif event == "return":
        # An exception ending the call gives "return" with None; the last opcode tells (as PySnooper).
        code = frame.f_code
        kind = RETURN if arg is not None or code.co_code[frame.f_lasti] in _RETURNS else UNWIND
    elif event == "exception":
        kind, arg = EXCEPTION, arg[1]
    else:
        return _local
    _pending.append(
        (
            _get_ident(),
            kind,
            frame.f_code,
            frame.f_lineno,
            id(frame),
            _snapshot(frame.f_locals),
            arg,
        )
    )
    if len(_pending) >= BATCH:
        flush()
    return _local


# Text.


def flush():
    """Format the events caught so far, write them to the trace file, keep them in their threads' rings.

    Blocks while another thread formats (the reprs of one batch). Never
    raises: a trace file that cannot be written is one ``autodbg:`` line, and
    the events stay in the rings. A call from a ``__repr__`` that the
    formatting runs returns at once.
    """
    global _formatting
    if _formatting == _get_ident():
        return
    with _lock:
        _formatting = _get_ident()
        try:
            count = len(_pending)
            if not count:
                return
            events = _pending[:count]
            del _pending[:count]  # events appended meanwhile stay, for the next flush
            from autodbg import guard

            guard.call("the trace", _write, events)
        finally:
            _formatting = None


def _write(events):
    global _last_thread
    from collections import deque

    out = []
    for event in events:
        ident = event[0]
        if ident != _last_thread:
            out.append(f"--- thread {_thread_name(ident)} ---")
            _last_thread = ident
        text = _format(event)
        ring = _rings.get(ident)
        if ring is None:
            ring = _rings[ident] = deque(maxlen=RING)
        ring.append(text)
        out.append(text)
    fd = _file()
    if fd:
        data = ("\n".join(out) + "\n").encode("utf-8", "backslashreplace")
        while data:
            data = data[os.write(fd, data) :]


def _format(event):
    """Return one event as PySnooper's lines (without timestamps and colours)."""
    ident, kind, code, line, frame_id, values, arg = event
    key = (ident, frame_id)
    level = _levels.get(ident, 0)
    if kind == CALL:
        _levels[ident] = level + 1
        state = _frames[key] = ({}, {})
        new = "Starting var:.. "
    else:
        level -= 1
        state = _frames.get(key) or _frames.setdefault(key, ({}, {}))
        new = "New var:....... "
    objects, texts = state  # name -> the value last seen, name -> its text
    indent = "    " * level if level > 0 else ""
    lines = []
    for name, value in values.items():
        if objects.get(name, _UNSEEN) is value and type(value) not in _COPIES:
            continue
        objects[name] = value
        text = short_repr(value)
        old = texts.get(name)
        if old != text:
            texts[name] = text
            if old is None:
                lines.append(f"{indent}{new}{name} = {text}")
            else:
                lines.append(f"{indent}Modified var:.. {name} = {text}")
    if kind == CALL:
        lines.insert(0, f"{indent}>>> {_codes.get(code, code.co_name)} ({code.co_filename})")
        line = _def_line(code, line)
    if kind == UNWIND:
        lines.append(f"{indent}Call ended by exception")
    else:
        lines.append(f"{indent}{_event_line(kind, code, line)}")
    if kind in (RETURN, UNWIND):
        del _frames[key]
        _levels[ident] = max(0, level)
        if kind == RETURN:
            lines.append(f"{indent}Return value:.. {short_repr(arg)}")
    elif kind == EXCEPTION:
        lines.append(f"{indent}Exception:..... {_exception(arg)}")
    return "\n".join(lines)


_UNSEEN = object()


def _def_line(code, line):
    """The ``def`` line of a decorated function, as PySnooper shows it, else ``line``."""
    import linecache

    lines = linecache.getlines(code.co_filename)
    first = line
    while 0 < first <= len(lines) and lines[first - 1].lstrip().startswith("@"):
        first += 1
    return first if 0 < first <= len(lines) else line


_sources: dict = {}  # (kind, code, line) -> the event's line of text


def _event_line(kind, code, line):
    key = (kind, code, line)
    text = _sources.get(key)
    if text is None:
        import linecache

        source = linecache.getline(code.co_filename, line).rstrip() or "SOURCE IS UNAVAILABLE"
        text = _sources[key] = f"{_KINDS[kind]:9} {line:4} {source}"
    return text


def _exception(error):
    try:
        text = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    except Exception:
        text = type(error).__name__
    return _cut(text)


def _cut(text):
    """Cut ``text`` to :data:`MAX_VALUE_CHARS` in the middle, as PySnooper's ``truncate`` does."""
    if len(text) <= MAX_VALUE_CHARS:
        return text
    left = (MAX_VALUE_CHARS - 3) // 2
    right = MAX_VALUE_CHARS - 3 - left
    return f"{text[:left]}...{text[-right:]}"


_repr = None
_SCALARS = frozenset((int, float, bool, type(None), str, bytes, complex))


def short_repr(value):
    """Return a repr of ``value`` of at most :data:`MAX_VALUE_CHARS` characters.

    Built-in values through :mod:`reprlib` (bounded work for a long
    container), a tensor by shape, dtype and device (its repr would copy it
    from the device), other objects by their ``repr``; a ``__repr__`` that
    raises gives ``<repr failed: ...>``.
    """
    global _repr
    if type(value) in _SCALARS:
        # A huge string is cut before its repr: bounded work, as reprlib's maxstring.
        return _cut(repr(value if type(value) is not str else value[:10000]))
    if _repr is None:
        import reprlib

        _repr = reprlib.Repr()
        _repr.maxlist = _repr.maxtuple = _repr.maxset = _repr.maxfrozenset = 30
        _repr.maxdict = _repr.maxdeque = _repr.maxarray = 30
        _repr.maxstring = _repr.maxlong = _repr.maxother = 10000
        _repr.maxlevel = 4
        _repr.repr_instance = _instance
    try:
        text = _repr.repr(value)
    except Exception as error:
        text = f"<repr failed: {type(error).__name__}>"
    return _cut(text.replace("\n", " ") if "\n" in text else text)


def _instance(value, level):
    kind = type(value)
    if kind.__module__ == "torch" and kind.__name__ in ("Tensor", "Parameter"):
        return f"tensor(shape={tuple(value.shape)}, dtype={value.dtype}, device={value.device})"
    return repr(value)


def _thread_name(ident):
    threading = sys.modules.get("threading")
    thread = None if threading is None else threading._active.get(ident)
    return f"{thread.name} ({ident})" if thread is not None else str(ident)


def _file():
    """Return the trace file's descriptor, opening it (0600, appended to) at the first write."""
    global _out, _path
    if _out is None:
        from autodbg import config, identity, registry
        from autodbg.messages import say

        try:
            folder = registry.job_dir(
                registry.runtime_dir(config.current().dir), identity.current.job
            )
            _path = os.path.join(folder, f"trace-{os.getpid()}.txt")
            _out = os.open(_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600)
        except (registry.RuntimeDirError, OSError) as error:
            _out = False
            say(
                f"AUTODBG_TRACE: no trace file ({error}); the last events stay in memory for sessions"
            )
        else:
            os.register_at_fork(after_in_child=_forked)
    return _out


def _forked():
    """In a child process: its own trace file, its parent's events left to the parent."""
    global _out, _path, _last_thread
    _out, _path, _last_thread = None, None, None
    del _pending[:]
    _rings.clear()
    _frames.clear()
    _levels.clear()
    _depth.clear()


def last(ident, count):
    """Return the last ``count`` events of thread ``ident``, formatted, oldest first.

    Formats the events not formatted yet first (:func:`flush`).

    Args:
        ident (int): a thread identifier (``threading.get_ident()``).
        count (int): how many events at most.

    Returns:
        list[str]: each event's lines, joined with newlines.
    """
    flush()
    ring = _rings.get(ident) or ()
    return list(ring)[-count:] if count > 0 else []


def path():
    """Return the trace file's path, None before the first write or when it cannot be written."""
    return _path if _out else None


def command(debugger, arg):
    """The session's ``trace [N]`` command: the last N events of the session's thread.

    Args:
        debugger (pdb.Pdb): the session's debugger (``message`` prints to its client).
        arg (str): the command's argument, a number of events or empty for :data:`SHOWN`.
    """
    arg = arg.strip()
    if arg and not (arg.isdigit() and int(arg) > 0):
        debugger.message(f"trace: {arg!r} is not a number of events; use `trace` or `trace N`")
        return
    if not _codes:
        debugger.message(
            "trace: no function is traced; set AUTODBG_TRACE=module:function before starting the program"
        )
        return
    session = getattr(debugger, "autodbg_session", None)
    ident = _get_ident() if session is None else session.thread_ident
    events = last(ident, int(arg) if arg else SHOWN)
    if not events:
        debugger.message(
            f"trace: no traced events in this thread (traced: {', '.join(_codes.values())})"
        )
        return
    debugger.message("\n".join(events))
    where = path()
    if where:
        debugger.message(f"trace: every event of this process is in {where}")
