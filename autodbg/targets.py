"""Find the functions named by ``AUTODBG_TRACE`` as their modules are imported.

:func:`watch` takes ``(module, qualname)`` pairs (``pkg.mod``, ``func`` or
``Class.method``) and calls ``found(owner, name, function)`` for each, once
the function exists: at once when its module is imported already, else right
after the module's code has run (:func:`autodbg.hooks.after_import`, the
post-import hook). ``found`` may put a replacement in place with
:func:`replace` (a plain ``setattr`` works too, except for a
``staticmethod`` or ``classmethod``, which :func:`replace` wraps again). A
name the module does not have gives one ``autodbg:`` line and is left alone.
A module imported as ``__main__`` (``python -m pkg.train``) is never
imported under its own name: name its functions ``__main__:func``.

The main script
---------------
The main script's module is not imported, the interpreter runs it, so the
post-import hook never fires for ``__main__:func``; its functions come to
exist one by one as its top-level lines run, and the replacement must be in
place before the first call. This module watches the main script's
top-level frame, and only that frame, line by line until every
``__main__`` target is defined, then stops watching:

* Python 3.12+: ``sys.monitoring`` (PEP 669). A ``PY_START`` event, global
  for the short time from start-up to the main script's first line (the
  rest of ``site`` and ``runpy``), finds the main script's code object; each
  other code object's callback returns ``DISABLE``, so it costs one call per
  code object, once. Then the global event is turned off and ``LINE`` (and
  ``PY_RETURN``) events are set on the main code object alone: code that is
  not the main script's top level runs with no instrumentation at all.
* Python 3.11: ``sys.settrace``, the only way a frame gets line events. The
  Python trace function sees ``call`` events only until the main script's
  frame starts; that frame then gets the local line-trace function and the
  global trace function becomes the builtin ``getattr``: for a ``call``
  event ``getattr(frame, "call", None)`` returns None in C (no local trace
  for any other frame) without running any Python code. What remains is
  3.11's tracing mode on the main thread (each instruction takes the slow
  path: measured 2 to 3x for a pure-Python loop, some 20 % on ``import
  torch``) while the main script's top level runs *before its last target
  is defined*, which is mostly its imports; once every target is found, the
  trace is removed. A trace function already set (coverage) is left alone
  and the ``__main__`` targets are not caught, with one line saying so.

Rejected: a dict subclass as the main module's namespace (the interpreter
runs the script in the module's own ``__dict__``, which cannot be
replaced); running the main script ourselves with ``runpy`` (changes
``sys.argv``, ``__spec__`` and every traceback); replacing the function at
its first call, seen by a ``call`` event (that call would run unreplaced,
and the events cost every call of the program); a global trace or
monitoring event for the whole run (a cost to all code).

Limits: a target defined and called on the same top-level line (``def`` and
call joined with ``;``, or a class whose body calls its own target) is
called before it is replaced; a debugger that sets its own trace function
while the main script's top level still runs (a top-level ``breakpoint()``
on 3.11) ends the watching, and targets defined after it are not replaced.

Start-up path: imports only ``sys``.
"""

import sys

_pending: dict = {}  # module name -> [(qualname, found, variable)] waiting for its import
_main: list = []  # the same for __main__, waiting for the main script's top level
_tool = None  # the sys.monitoring tool id in use (3.12+)


def watch(pairs, found, after_import, variable=None):
    """Call ``found(owner, name, function)`` for each target once its module has defined it.

    Never blocks; for a module not imported yet, ``found`` runs right after
    its import, in the importing thread; for ``__main__``, at the main
    script's first top-level line after the definition.

    Args:
        pairs (Iterable[tuple[str, str]]): ``(module, qualname)``, as
            :func:`autodbg.config.setting` gives them for ``trace``.
        found (Callable[[object, str, object], None]): gets the module or class
            that holds the function, the attribute's name, and the function (for
            a ``staticmethod`` or ``classmethod``, its ``__func__``). An error
            in it becomes one ``autodbg:`` line.
        after_import (Callable[[str, Callable], None]): the post-import hook,
            :func:`autodbg.hooks.after_import` (passed in: this module is
            reached from the hooks, and imports none of them).
        variable (str | None): the setting's name, for the lines about
            targets that are not found (``AUTODBG_TRACE``).
    """
    for module, qualname in pairs:
        entry = (qualname, found, variable)
        if module == "__main__":
            _watch_main(entry)
            continue
        waiting = _pending.get(module)
        if waiting is not None:
            waiting.append(entry)
            continue
        _pending[module] = [entry]
        after_import(module, _imported)


def replace(owner, name, replacement):
    """Put ``replacement`` in place of ``owner.name``, as a ``staticmethod``/``classmethod`` if it was one.

    Args:
        owner (object): the module or class :func:`watch` gave.
        name (str): the attribute.
        replacement (Callable): the new function.
    """
    raw = _raw(owner, name)
    if isinstance(raw, (staticmethod, classmethod)):
        replacement = type(raw)(replacement)
    setattr(owner, name, replacement)


def _imported(module):
    for entry in _pending.pop(module.__name__, ()):
        _resolve(module, module.__name__, entry, report=True)


def _raw(owner, name):
    """Return the attribute as stored (a ``staticmethod`` stays one), or None."""
    if isinstance(owner, type):
        for klass in owner.__mro__:
            if name in vars(klass):
                return vars(klass)[name]
        return None
    return getattr(owner, name, None)


def _resolve(module, module_name, entry, report):
    """Call the entry's ``found`` if ``module`` defines its qualname; return whether it does."""
    qualname, found, variable = entry
    *path, name = qualname.split(".")
    owner = module
    for part in path:
        owner = getattr(owner, part, None)
        if owner is None:
            break
    raw = None if owner is None else _raw(owner, name)
    if raw is None:
        if report:
            _say(
                f"{variable + ': ' if variable else ''}{module_name} has no {qualname}; left alone"
            )
        return False
    function = raw.__func__ if isinstance(raw, (staticmethod, classmethod)) else raw
    try:
        found(owner, name, function)
    except Exception as error:
        _say(f"could not hook {module_name}:{qualname}: {type(error).__name__}: {error}")
    return True


def _say(text):
    from autodbg.messages import say

    say(text)


# The main script.


def _watch_main(entry):
    main = sys.modules.get("__main__")
    if main is not None and _resolve(main, "__main__", entry, report=False):
        return  # watched after the main script defined it
    _main.append(entry)
    if len(_main) > 1:
        return
    if hasattr(sys, "monitoring"):
        _monitor()
    elif sys.gettrace() is None:
        sys.settrace(_on_call)
    else:
        _give_up("a trace function is set already (coverage?)")


def _is_main(frame):
    main = sys.modules.get("__main__")
    return frame.f_code.co_name == "<module>" and frame.f_globals is getattr(main, "__dict__", None)


def _check():
    """Replace the targets the main script defined so far; return True when none is left."""
    main = sys.modules["__main__"]
    _main[:] = [entry for entry in _main if not _resolve(main, "__main__", entry, report=False)]
    return not _main


def _missing():
    for qualname, _, variable in _main:
        _say(f"{variable + ': ' if variable else ''}__main__ has no {qualname}; left alone")
    _main.clear()


def _give_up(why):
    for qualname, _, variable in _main:
        _say(f"{variable + ': ' if variable else ''}__main__:{qualname} not watched: {why}")
    _main.clear()


def _on_call(frame, event, arg):
    # The global trace function (3.11) until the main script's frame starts.
    try:
        if event != "call" or not _is_main(frame):
            return None
        sys.settrace(getattr)  # other frames: no local trace, and no Python code per call
        return _on_line
    except Exception as error:
        sys.settrace(None)
        _give_up(f"{type(error).__name__}: {error}")
        return None


def _on_line(frame, event, arg):
    # The main script's frame's local trace function (3.11).
    try:
        if event == "return":
            _missing()
        elif event != "line" or not _check():
            return _on_line
        if sys.gettrace() is getattr:
            sys.settrace(None)
        return None
    except Exception as error:
        if sys.gettrace() is getattr:
            sys.settrace(None)
        _give_up(f"{type(error).__name__}: {error}")
        return None


def _monitor():
    global _tool
    monitoring = sys.monitoring
    free = [tool for tool in (3, 4) if monitoring.get_tool(tool) is None]
    if not free:
        _give_up("no free sys.monitoring tool id")
        return
    _tool = free[0]
    monitoring.use_tool_id(_tool, "autodbg targets")
    events = monitoring.events
    monitoring.register_callback(_tool, events.PY_START, _started)
    monitoring.register_callback(_tool, events.LINE, _line)
    monitoring.register_callback(_tool, events.PY_RETURN, _returned)
    monitoring.set_events(_tool, events.PY_START)


def _started(code, offset):
    # PY_START (3.12+), global until the main script's code object starts.
    monitoring = sys.monitoring
    try:
        if code.co_name == "<module>" and _is_main(sys._getframe(1)):
            monitoring.set_events(_tool, 0)
            monitoring.set_local_events(
                _tool, code, monitoring.events.LINE | monitoring.events.PY_RETURN
            )
    except Exception as error:
        _stop_monitoring(None)
        _give_up(f"{type(error).__name__}: {error}")
    return monitoring.DISABLE


def _line(code, line):
    try:
        if _check():
            _stop_monitoring(code)
    except Exception as error:
        _stop_monitoring(code)
        _give_up(f"{type(error).__name__}: {error}")


def _returned(code, offset, value):
    _missing()
    _stop_monitoring(code)


def _stop_monitoring(code):
    global _tool
    monitoring = sys.monitoring
    if _tool is None:
        return
    monitoring.set_events(_tool, 0)
    if code is not None:
        monitoring.set_local_events(_tool, code, 0)
    for event in (monitoring.events.PY_START, monitoring.events.LINE, monitoring.events.PY_RETURN):
        monitoring.register_callback(_tool, event, None)
    monitoring.free_tool_id(_tool)
    _tool = None
