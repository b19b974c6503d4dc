"""Start-up path, imported by the one line of ``autodbg.pth`` when ``AUTODBG`` is true.

Installs the hooks (:func:`autodbg.hooks.install`, which reads its settings
with :mod:`autodbg.config`) and exports ``AUTODBG_JOB`` so that child processes
join this process's job (see :mod:`autodbg.identity`; a launcher's job id,
when there is one, still comes first). Never raises: an error becomes one
``autodbg:`` line and Python goes on as if autodbg were not installed.

This module is also the post-import hook: it patches a module right after
the program imports it. ``threading.excepthook`` cannot be set before
``threading`` is imported, and importing it at start-up would cost every
process; torch must never be imported by autodbg. So this module, on
``sys.meta_path`` (the import system asks any object there for
``find_spec``), watches for the import of a few names and wraps their
loader, which runs autodbg's callback right after the module's code (the
post-import hook idea of PEP 369, done with PEP 451 loaders). It finds
nothing itself and costs one dict look-up per import. A name stays watched
until its module is actually executed: a program that asks
``importlib.util.find_spec(name)`` first gets a spec with the wrapped loader,
and its later ``import`` gets another one; the callback runs once, for the
module that is executed.

Why here and not in a module of its own (it was ``autodbg/importhook.py``):
start-up time. Each module that start-up imports costs some 0.33 M
instructions, about 70 µs on the development VM (the import system's find,
stats, .pyc read and exec, measured with callgrind), an eighth of what
``AUTODBG=1`` adds to ``python -c pass``; this module is imported anyway
(it is what ``autodbg.pth`` imports). Importing it starts autodbg, so only
:func:`autodbg.hooks.install`, which runs from here, imports
:func:`after_import` from it. For the same
reason nothing here makes a class at start-up (a class costs as much as a
small module): the finder is this module itself, and the loader wrapper's
class is made at the first import of a watched name.

Start-up path: imports ``sys``, ``os`` (both loaded before any ``.pth``
line runs) and :mod:`autodbg.hooks` (which imports :mod:`autodbg.config`).
"""

import sys

_watched: dict = {}  # module name -> callback
_busy: set = set()  # names whose spec this module is asking the other finders for
_loader_class = None


def after_import(name, callback):
    """Call ``callback(module)`` right after the module ``name`` is first imported.

    If it is already imported, call it now.

    Args:
        name (str): the module's full name.
        callback (Callable[[types.ModuleType], None]): errors in it are reported
            as one ``autodbg:`` line, never raised into the importer.
    """
    module = sys.modules.get(name)
    if module is not None:
        _run_callback(callback, module)
        return
    if not _watched:
        sys.meta_path.insert(0, sys.modules[__name__])
    _watched[name] = callback


def find_spec(name, path=None, target=None):
    """The meta-path finder's method (PEP 451): a watched name's spec, with its loader wrapped.

    Args:
        name (str): the module's full name.
        path (list[str] | None): the parent package's ``__path__``.
        target (types.ModuleType | None): the module being reloaded.

    Returns:
        importlib.machinery.ModuleSpec | None: the spec the next finder
        returns, its loader wrapped when it has ``exec_module``; None for a
        name that is not watched.
    """
    if name not in _watched or name in _busy:
        return None
    _busy.add(name)
    try:
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            if find is None or find is find_spec:
                continue
            spec = find(name, path, target)
            if spec is not None:
                break
        else:
            return None
    finally:
        _busy.discard(name)
    if spec.loader is not None and hasattr(spec.loader, "exec_module"):
        spec.loader = _wrapper()(spec.loader, name)
    return spec


def _run_callback(callback, module):
    try:
        callback(module)
    except Exception as error:
        from autodbg.messages import say

        say(f"could not hook {module.__name__}: {type(error).__name__}: {error}")


def _wrapper():
    """Return the class of the loader wrapper, made at its first use."""
    global _loader_class
    if _loader_class is None:

        class _CallbackLoader:
            """Delegates to the real loader, then runs the watched name's callback on the executed module."""

            def __init__(self, loader, name):
                self._loader = loader
                self._name = name

            def __getattr__(self, name):
                return getattr(self._loader, name)

            def create_module(self, spec):
                return self._loader.create_module(spec)

            def exec_module(self, module):
                # Give the module its real loader back before its code runs, so that
                # nothing the module or its users inspect ever sees this wrapper.
                module.__loader__ = self._loader
                if module.__spec__ is not None:
                    module.__spec__.loader = self._loader
                self._loader.exec_module(module)
                callback = _watched.pop(self._name, None)
                if callback is not None:
                    _run_callback(callback, module)

        _loader_class = _CallbackLoader
    return _loader_class


def _start():
    import os

    from autodbg import hooks

    os.environ.setdefault("AUTODBG_JOB", f"pg{os.getpgrp()}")
    hooks.install()


try:
    _start()
except Exception as error:  # never break the user's interpreter start-up
    sys.stderr.write(f"autodbg: not installed: {type(error).__name__}: {error}\n")
