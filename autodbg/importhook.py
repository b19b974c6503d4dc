"""The post-import hook: patch a module right after the program imports it.

``threading.excepthook`` cannot be set before ``threading`` is imported, and
importing it at start-up would cost every process; torch must never be
imported by autodbg. So a meta-path finder watches for the import of a few
names and wraps their loader, which runs autodbg's callback right after the
module's code (the post-import hook idea of PEP 369, done with PEP 451
loaders). The finder finds nothing itself and costs one dict look-up per import.

A name stays watched until its module is actually executed: a program that
asks ``importlib.util.find_spec(name)`` first gets a spec with the wrapped
loader, and its later ``import`` gets another one; the callback runs once,
for the module that is executed.

Start-up path: imports only ``sys``.
"""

import sys

_watched = {}


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
        sys.meta_path.insert(0, _PostImportFinder)
    _watched[name] = callback


def _run_callback(callback, module):
    try:
        callback(module)
    except Exception as error:
        from autodbg.messages import say

        say(f"could not hook {module.__name__}: {type(error).__name__}: {error}")


class _PostImportFinder:
    """A meta-path finder that finds nothing itself: it wraps the loader of watched modules."""

    _busy = set()

    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name not in _watched or name in cls._busy:
            return None
        cls._busy.add(name)
        try:
            for finder in sys.meta_path:
                find = getattr(finder, "find_spec", None)
                if finder is cls or find is None:
                    continue
                spec = find(name, path, target)
                if spec is not None:
                    break
            else:
                return None
        finally:
            cls._busy.discard(name)
        if spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        spec.loader = _CallbackLoader(spec.loader, name)
        return spec


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
