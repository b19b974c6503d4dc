"""``reload``: apply the program's edited source files to the live process, in place.

The ``reload`` command of every session (:func:`command`) and
``AUTODBG_RELOAD=watch`` (:func:`watch`) do the same thing (:func:`reload`):

1. **What changed.** The program's own modules: those in ``sys.modules``
   (``__main__`` included) with a ``.py`` file outside the standard library
   and ``site-packages``/``dist-packages`` (an installed library is not the
   program's to patch, and a ``pip install`` beside a running job must not
   leak into it), autodbg's own modules excepted. A file is read again when
   its ``(mtime, size, inode)`` changed since it was last read, and applied
   when its SHA-256 differs from the last applied one (a save without change
   applies nothing). A file whose mtime is less than a second older than the
   time it was read is hashed again next time, however its ``stat`` looks: a
   second save within the file system's timestamp granularity keeps the
   mtime (git's "racily clean" entries). A file never read before is compared
   with the live objects themselves (below), so edits made before the first
   ``reload`` are found too; once :func:`watch` runs, only when it is newer
   than the watcher's start (else it is as imported). A module still being
   imported is left for later.
2. **Scratch evaluation.** The new source is parsed (a syntax error changes
   nothing), and only its top-level ``def``, ``class`` and ``import``
   statements are executed, with the live module's globals and a scratch
   dictionary as locals: module-level state (``model = load()``) is never
   re-run and the live namespace is untouched. A definition that exists in
   the live module is executed without its decorators (a ``@register(...)``
   does not register twice) and an existing class without its bases,
   keywords and decorators (no metaclass or ``__init_subclass__`` side
   effect); class bodies do run, in the scratch class. An exception there
   (a default or a decorator that fails) changes nothing and is reported.
3. **Patching in place.** Each scratch function is paired with the live one
   of the same ``__qualname__`` and code name, reached through decorators
   (``__wrapped__``, else the wrapper's closure cells), ``staticmethod``,
   ``classmethod`` and ``property``. The live function gets the new
   ``__code__`` (so every reference to it, a bound method, a callback, a
   decorator's wrapper, runs the new code), and changed defaults and keyword
   defaults: a literal that changed, or a value of another type; a default
   object of the same type (a list, a tensor) is kept, since it may hold state.
   Closures already made by a patched function (``triple = make_scaler(3)``)
   are found with one ``gc.get_referrers`` over their old code objects and
   get the new inner code. A function whose free variables changed (a method
   that starts using ``super()``) is replaced where it is bound, when the
   binding is the function itself, else reported as not patched. New
   functions, classes, methods and imported names are added; removed ones
   are left alone. Everything is planned before anything is changed.
   ``linecache`` is refreshed, so that tracebacks and ``list`` show the new lines.

Not jurigged (0.6.1, evaluated for this module), because its library API
misses several of these points:

* it diffs the new source against the source it cached *when the module was
  imported*, through an import sniffer that ``jurigged.register`` puts at the
  front of ``sys.meta_path`` on import (and ``codefind``, on import, scans
  ``gc.get_objects()`` and adds a permanent ``sys.addaudithook``). autodbg
  may not import it at start-up, and imported at the first ``reload`` it
  would take the already edited file as its baseline and see no change;
* on a change it re-runs changed and added module-level statements
  (``CodeFile.merge`` evaluates added ``LineDefinition`` s: "Run ...") and
  deletes the functions removed from the file (``refresh`` merges with
  ``allow_deletions=True``), where the issue wants module state not re-run
  and removed definitions left alone;
* it applies definition by definition, reporting an error in one and
  applying the others, where a failing module must change nothing;
* its watcher needs ``watchdog``'s observer threads (which cannot be named
  ``autodbg-*`` nor guarded) and ``threading``, which autodbg may not import
  at start-up.

What it does well is borrowed: code swapped by assigning ``__code__`` (as
``codefind.conform`` does), decorators stripped before re-evaluating an
existing function (``FunctionDefinition.reevaluate``), the free-variable check.

Imported at a ``reload`` command, or at start-up with ``AUTODBG_RELOAD=watch``:
imports only ``_thread``, ``os``, ``sys`` and autodbg's guard at the top; the
rest when a file is read.
"""

import _thread
import os
import sys

from autodbg import guard

_INTERVAL = 0.3  # seconds between two looks of the watcher at the program's source files
_RACY = 10**9  # ns: a file read this soon after its mtime may change again keeping its mtime

_lock = _thread.allocate_lock()  # one reload at a time: the command and the watcher thread
_applied: dict = {}  # path -> (stat key, SHA-256, ns when read) of what the live objects match
_failed: dict = {}  # path -> stat key of the last version the watcher could not apply
_pending: dict = {}  # path -> stat key the watcher saw last look (applied once it holds still)
_since = None  # ns: when watch() started; with it, an older file is as it was imported
_modules_seen: tuple = (-1, {}, ())  # (len(sys.modules), {path: [module]}, library folders)
_MISSING = object()


class Report:
    """What :func:`reload` did with one changed source file.

    Attributes:
        path (str): the file.
        ok (bool): False when nothing of it was applied (a syntax error, an
            exception while defining).
        text (str): one line, ``train.py: compute_metrics, Trainer.step`` or
            ``train.py: not reloaded: SyntaxError: ... (line 12)``.
    """

    __slots__ = ("ok", "path", "text")

    def __init__(self, path, ok, text):
        self.path = path
        self.ok = ok
        self.text = text

    def __repr__(self):
        return f"Report({self.path!r}, {self.ok}, {self.text!r})"


def command(debugger, arg):
    """The ``reload`` debugger command: apply the changed source files and say what changed.

    Blocks for the reload (milliseconds per changed file; the first ``reload``
    of a process reads each of the program's files once).

    Args:
        debugger (pdb.Pdb): the session's debugger; prints with its
            ``message`` and ``error``.
        arg (str): the command's argument; none is taken.
    """
    if arg.strip():
        debugger.error("reload takes no argument: type reload")
        return
    frames = [frame for frame, _ in getattr(debugger, "stack", ())]
    reports = guard.call("the reload command", reload, frames=frames, otherwise=lambda: None)
    if reports is None:
        return
    if not reports:
        debugger.message("reload: no function or class changed in the program's source files")
    for report in reports:
        (debugger.message if report.ok else debugger.error)(report.text)


def watch():
    """``AUTODBG_RELOAD=watch``: apply every save of the program's source files as it happens.

    Called at start-up (:func:`autodbg.hooks.install`): starts one daemon
    thread with ``_thread`` (``threading`` may not be imported at start-up,
    nor first imported by another thread than the main one) that looks at the
    files every 0.3 s, applies a file once its ``stat`` held still for one look
    (an editor's save is complete), and prints one ``autodbg: reloaded ...``
    or ``autodbg: could not reload ...`` line per applied or refused version.
    The thread calls itself ``autodbg-reload`` once the program has imported
    ``threading``; an error inside it is one line and ends it (:mod:`autodbg.guard`).
    """
    global _since
    import time

    _since = time.time_ns()
    _thread.start_new_thread(_watch, ())


@guard.protect("the reload watcher")
def _watch():
    import time

    from autodbg.messages import say

    named = False
    while True:
        if not named and "threading" in sys.modules:
            # Not imported here: its first import makes the importing thread the main one.
            sys.modules["threading"].current_thread().name = "autodbg-reload"
            named = True
        for report in reload(watching=True):
            say(("reloaded " if report.ok else "could not reload ") + report.text)
        time.sleep(_INTERVAL)


def reload(watching=False, frames=()):
    """Apply the program's changed source files to the live objects (the module docstring says how).

    Args:
        watching (bool): the watcher's look: a file is applied only once its
            ``stat`` is the one seen at the previous look, and a version
            that failed is not tried again.
        frames (Iterable[types.FrameType]): frames whose globals may be the
            script's (a post-mortem session's stack), for when
            ``sys.modules["__main__"]`` is not the script's module.

    Returns:
        list[Report]: one per file applied or refused, in ``sys.modules``
        order; empty when nothing changed.
    """
    with _lock:
        reports = []
        for path, modules in _sources(frames).items():
            report = _reload_file(path, modules, watching)
            if report is not None:
                reports.append(report)
        return reports


def _sources(frames):
    # The scan of sys.modules is kept until a module is added; __main__ is
    # looked at each time, as its __file__ is set after autodbg starts.
    global _modules_seen
    count = len(sys.modules)
    if count != _modules_seen[0]:
        skip = tuple(folder + os.sep for folder in _library_folders())
        found: dict = {}
        for name, module in list(sys.modules.items()):
            if name != "__main__" and name != "autodbg" and not name.startswith("autodbg."):
                path = _source(module)
                if path is not None and not path.startswith(skip):
                    found.setdefault(path, []).append(module)
        _modules_seen = (count, found, skip)
    sources = dict(_modules_seen[1])
    main = _main(frames)
    path = _source(main) or _main_source(main)
    if path is not None and not path.startswith(_modules_seen[2]):
        sources[path] = [*sources.get(path, ()), main]
    return sources


def _source(module):
    if not isinstance(module, (type(sys), _Namespace)):
        return None
    path = module.__dict__.get("__file__")
    if not isinstance(path, str) or not path.endswith(".py"):
        return None
    return os.path.abspath(path)


class _Namespace:
    """A module's namespace without its module object (``__main__`` under IPython)."""

    def __init__(self, namespace):
        self.__dict__ = namespace


def _main(frames):
    # IPython (ipdb) puts a module of its own in sys.modules["__main__"]: the
    # script's namespace is then found as the globals of the session's frames
    # or of running ones.
    main = sys.modules.get("__main__")
    if _main_source(main):
        return main
    for frame in [*frames, *sys._current_frames().values()]:
        while frame is not None:
            if frame.f_globals.get("__name__") == "__main__":
                namespace = _Namespace(frame.f_globals)
                if _main_source(namespace):
                    return namespace
            frame = frame.f_back
    return main


def _main_source(main):
    # Python deletes the script's __file__ from __main__ once the script ends
    # (Python/pythonrun.c), which is when a post-mortem session of its main
    # thread runs: its functions still name their file.
    if not isinstance(main, (type(sys), _Namespace)):
        return None
    function_type = type(_main_source)
    for value in list(main.__dict__.values()):
        if isinstance(value, function_type) and value.__module__ == "__main__":
            path = value.__code__.co_filename
            if path.endswith(".py") and os.path.isabs(path):
                return path
    return None


def _library_folders():
    folders = {os.path.dirname(os.path.abspath(os.__file__))}
    for entry in sys.path:
        if os.path.basename(entry) in ("site-packages", "dist-packages"):
            folders.add(os.path.abspath(entry))
    return folders


def _reload_file(path, modules, watching):
    import time

    try:
        stat = os.stat(path)
    except OSError:  # gone, or between an editor's unlink and rename
        return None
    key = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
    for module in modules:
        spec = module.__dict__.get("__spec__")
        if getattr(spec, "_initializing", False):  # being imported (importlib._bootstrap)
            return None
    seen = _applied.get(path)
    if watching:
        held_still = _pending.get(path) == key
        _pending[path] = key
        if _failed.get(path) == key or not held_still:
            return None
    if seen is not None and seen[0] == key and seen[2] - key[0] >= _RACY:
        return None
    import hashlib

    read_at = time.time_ns()
    try:
        with open(path, "rb") as file:
            data = file.read()
    except OSError:
        return None
    digest = hashlib.sha256(data).digest()
    as_imported = seen is None and _since is not None and key[0] < _since
    if as_imported or (seen is not None and seen[1] == digest):
        _applied[path] = (key, digest, read_at)
        return None
    shown = _shown(path)
    try:
        changed, notes = _apply(path, modules, data)
    except SyntaxError as error:
        return _refused(path, key, watching, f"{shown}: not reloaded: {_syntax(error)}")
    except Exception as error:
        return _refused(
            path, key, watching, f"{shown}: not reloaded: {type(error).__name__}: {error}"
        )
    _applied[path] = (key, digest, read_at)
    _failed.pop(path, None)
    import linecache

    linecache.checkcache(path)
    if changed:
        text = f"{shown}: {', '.join(changed)}"
    elif seen is not None or notes:
        text = f"{shown}: no function or class changed (module-level statements are not re-run)"
    else:
        return None  # first read, and it matches the live objects: not edited
    if notes:
        text += "; not patched: " + "; ".join(notes)
    return Report(path, True, text)


def _refused(path, key, watching, text):
    if watching:
        _failed[path] = key
    return Report(path, False, text)


def _syntax(error):
    where = f" (line {error.lineno})" if error.lineno else ""
    return f"{type(error).__name__}: {error.msg}{where}"


def _shown(path):
    relative = os.path.relpath(path)
    return path if relative.startswith(os.pardir) else relative


def _apply(path, modules, data):
    """Plan the patches of every module whose file is ``path``, then make them.

    Returns:
        tuple[list[str], list[str]]: the changed and added definitions
        (``Trainer.step``, ``helper (new)``), and notes on what could not be patched.

    Raises:
        SyntaxError: the new source does not compile; nothing changed.
        Exception: what executing its definitions raised; nothing changed.
    """
    import ast
    from importlib.util import decode_source

    tree = ast.parse(decode_source(data), path)
    plan = _Plan(path)
    for module in modules:
        plan.module(module, tree)
    plan.closures()
    plan.make()
    return plan.changed, plan.notes


class _Plan:
    """The patches of one file, gathered without changing anything, then made at once."""

    def __init__(self, path):
        self.path = path
        self.steps: list = []  # (kind, target, *values), made in order by make()
        self.changed: list = []
        self.notes: list = []
        self.inner: dict = {}  # old nested code object -> new one, for closures already made

    def module(self, module, tree):
        import ast
        import copy

        live = module.__dict__
        body = []
        for node in tree.body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                body.append(node)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if node.name in live:
                    node = copy.copy(node)
                    node.decorator_list = []
                body.append(node)
            elif isinstance(node, ast.ClassDef):
                cls = live.get(node.name)
                if self._defined_here(cls, module.__name__, node.name):
                    node = _bare_class(node, cls)
                body.append(node)
        code = compile(ast.Module(body=body, type_ignores=[]), self.path, "exec", dont_inherit=True)
        scratch: dict = {}
        exec(code, live, scratch)  # noqa: S102 (the program's own edited definitions)
        defined = {node.name for node in body if not isinstance(node, (ast.Import, ast.ImportFrom))}
        for name, new in scratch.items():
            old = live.get(name, _MISSING)
            if old is _MISSING:
                self.steps.append(("set", module, name, new))
                if name in defined:
                    self.changed.append(f"{name} (new)")
            elif name not in defined:
                continue  # an imported name the module has already
            elif isinstance(new, type) and self._defined_here(old, module.__name__, name):
                self._class(old, new)
            else:
                self._definition(module, name, old, new)

    def _defined_here(self, cls, module_name, qualname):
        return (
            isinstance(cls, type)
            and cls.__dict__.get("__module__") == module_name
            and cls.__qualname__ == qualname
        )

    def _class(self, old, new):
        for name, value in list(new.__dict__.items()):
            if isinstance(value, type):
                qualname = f"{new.__qualname__}.{name}"
                if value.__qualname__ != qualname:
                    continue
                inner = old.__dict__.get(name, _MISSING)
                if inner is _MISSING:
                    self._add(old, name, value, new)
                elif self._defined_here(inner, old.__module__, qualname):
                    self._class(inner, value)
            elif _functions(value, self.path):
                current = old.__dict__.get(name, _MISSING)
                if current is _MISSING:
                    self._add(old, name, value, new)
                else:
                    self._definition(old, name, current, value, owner=old)

    def _add(self, cls, name, value, scratch_cls):
        self.steps.append(("set", cls, name, value))
        self._own(value, scratch_cls, cls)
        self.changed.append(f"{cls.__qualname__}.{name} (new)")

    def _own(self, value, scratch_cls, cls):
        # A method made in the scratch class finds it through its __class__
        # cell (super(), PEP 3135): point the cell at the live class.
        for function in _functions(value, self.path):
            code = function.__code__
            if "__class__" in code.co_freevars:
                cell = function.__closure__[code.co_freevars.index("__class__")]
                if cell.cell_contents is scratch_cls:
                    self.steps.append(("cell", cell, cls))

    def _definition(self, holder, name, old, new, owner=None):
        old_functions = _functions(old, self.path)
        if not old_functions:
            self.notes.append(
                f"{_qualname(new, name)} (the live object is not a function of this file)"
            )
            return
        used: set = set()
        for function in _functions(new, self.path):
            match = next(
                (
                    candidate
                    for candidate in reversed(old_functions)  # the innermost: below the wrappers
                    if id(candidate) not in used
                    and candidate.__qualname__ == function.__qualname__
                    and candidate.__code__.co_name == function.__code__.co_name
                ),
                None,
            )
            if match is None:
                self.notes.append(f"{function.__qualname__} (not found among the live functions)")
                continue
            used.add(id(match))
            self._function(holder, name, old, match, function, owner)

    def _function(self, holder, name, bound, old, new, owner):
        code = new.__code__
        same_code = _same_code(old.__code__, code)
        defaults = _merged(old.__defaults__, new.__defaults__)
        kwdefaults = _merged_dict(old.__kwdefaults__, new.__kwdefaults__)
        changed = (
            not same_code
            or defaults is not old.__defaults__
            or kwdefaults is not old.__kwdefaults__
        )
        if old.__code__ == code and not changed:
            return
        if old.__code__.co_freevars != code.co_freevars:
            if bound is not old:
                self.notes.append(
                    f"{old.__qualname__} (its free variables changed, and it is decorated)"
                )
                return
            self.steps.append(("set", holder, name, new))
            if owner is not None:
                self._own(new, _scratch_class(new), owner)
        else:
            self.steps.append(("code", old, code))
            if defaults is not old.__defaults__ or kwdefaults is not old.__kwdefaults__:
                self.steps.append(("defaults", old, defaults, kwdefaults))
            _pair_inner(old.__code__, code, self.inner)
        if changed:
            self.changed.append(old.__qualname__)

    def closures(self):
        """Plan new inner code for the closures made by the functions patched so far."""
        if not self.inner:
            return
        import gc

        function_type = type(_pair_inner)
        for referrer in gc.get_referrers(*self.inner):
            if not isinstance(referrer, function_type):
                continue
            code = self.inner.get(referrer.__code__)
            if code is None:
                continue
            if code.co_freevars != referrer.__code__.co_freevars:
                self.notes.append(
                    f"{referrer.__qualname__} made before (its free variables changed)"
                )
            else:
                self.steps.append(("code", referrer, code))

    def make(self):
        """Make the planned patches."""
        for kind, target, *values in self.steps:
            if kind == "code":
                target.__code__ = values[0]
            elif kind == "defaults":
                target.__defaults__, target.__kwdefaults__ = values
            elif kind == "cell":
                target.cell_contents = values[0]
            elif isinstance(target, type):
                setattr(target, *values)
            else:
                target.__dict__[values[0]] = values[1]


def _bare_class(node, cls):
    # An existing class: no decorators, bases, keywords (metaclass side effects);
    # its existing methods without their decorators, except properties', whose
    # setters need the decorated object.
    import ast
    import copy

    node = copy.copy(node)
    node.decorator_list, node.bases, node.keywords = [], [], []
    body = []
    for child in node.body:
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
            live = cls.__dict__.get(child.name, _MISSING)
            if live is not _MISSING and not isinstance(live, property):
                child = copy.copy(child)
                child.decorator_list = []
        elif isinstance(child, ast.ClassDef):
            inner = cls.__dict__.get(child.name)
            if isinstance(inner, type) and inner.__qualname__ == f"{cls.__qualname__}.{child.name}":
                child = _bare_class(child, inner)
        body.append(child)
    node.body = body
    return node


def _functions(value, path, depth=0):
    """The functions of ``path`` reachable from a definition's value, outermost first."""
    function_type = type(_functions)
    found = []
    if depth > 5:
        return found
    if isinstance(value, function_type):
        if value.__code__.co_filename == path:
            found.append(value)
        inner = value.__dict__.get("__wrapped__")
        if inner is not None:
            found += _functions(inner, path, depth + 1)
        else:  # a decorator without functools.wraps keeps the function in a cell
            for cell in value.__closure__ or ():
                try:
                    content = cell.cell_contents
                except ValueError:  # an empty cell
                    continue
                if isinstance(content, function_type):
                    found += _functions(content, path, depth + 1)
    elif isinstance(value, (staticmethod, classmethod)):
        found += _functions(value.__func__, path, depth + 1)
    elif isinstance(value, property):
        for accessor in (value.fget, value.fset, value.fdel):
            if accessor is not None:
                found += _functions(accessor, path, depth + 1)
    else:
        try:  # functools.lru_cache's wrapper and other callables made by functools.wraps
            inner = object.__getattribute__(value, "__dict__").get("__wrapped__")
        except (AttributeError, TypeError):
            inner = None
        if inner is not None:
            found += _functions(inner, path, depth + 1)
    return found


def _qualname(value, name):
    qualname = getattr(value, "__qualname__", None)
    return qualname if isinstance(qualname, str) else name


def _scratch_class(function):
    code = function.__code__
    if "__class__" not in code.co_freevars:
        return None
    return function.__closure__[code.co_freevars.index("__class__")].cell_contents


def _same_code(a, b):
    """Tell whether two code objects do the same thing, line numbers aside."""
    if (
        a.co_code != b.co_code
        or a.co_names != b.co_names
        or a.co_varnames != b.co_varnames
        or a.co_freevars != b.co_freevars
        or a.co_cellvars != b.co_cellvars
        or a.co_flags != b.co_flags
        or a.co_argcount != b.co_argcount
        or a.co_posonlyargcount != b.co_posonlyargcount
        or a.co_kwonlyargcount != b.co_kwonlyargcount
        or len(a.co_consts) != len(b.co_consts)
    ):
        return False
    code_type = type(a)
    for x, y in zip(a.co_consts, b.co_consts):
        if isinstance(x, code_type) and isinstance(y, code_type):
            if not _same_code(x, y):
                return False
        elif type(x) is not type(y) or x != y:
            return False
    return True


def _pair_inner(old, new, pairs):
    # Nested code objects in the same order under the same name are the same
    # definition: the closures made from the old one get the new one.
    code_type = type(old)
    olds = [c for c in old.co_consts if isinstance(c, code_type)]
    news = [c for c in new.co_consts if isinstance(c, code_type)]
    for before in olds:
        same_name = [c for c in olds if c.co_name == before.co_name]
        candidates = [c for c in news if c.co_name == before.co_name]
        index = same_name.index(before)
        if index < len(candidates):
            after = candidates[index]
            if after is not before:
                pairs[before] = after
                _pair_inner(before, after, pairs)


_PLAIN = (int, float, complex, str, bytes, bool, type(None), type(...))


def _same_value(a, b):
    if a is b:
        return True
    if type(a) is not type(b):
        return False
    if type(a) in _PLAIN:
        return a == b
    if type(a) is tuple:
        return len(a) == len(b) and all(_same_value(x, y) for x, y in zip(a, b))
    return True  # an object of the same type: the live one is kept, it may hold state


def _merged(old, new):
    """The defaults to keep: ``old`` itself when unchanged, else the new ones (old objects kept)."""
    old_values, new_values = old or (), new or ()
    if len(old_values) != len(new_values):
        return new
    if all(_same_value(a, b) for a, b in zip(old_values, new_values)):
        return old
    return tuple(a if _same_value(a, b) else b for a, b in zip(old_values, new_values))


def _merged_dict(old, new):
    old_values, new_values = old or {}, new or {}
    if old_values.keys() != new_values.keys():
        return new
    if all(_same_value(old_values[k], new_values[k]) for k in old_values):
        return old
    return {k: v if _same_value(v, new_values[k]) else new_values[k] for k, v in old_values.items()}
