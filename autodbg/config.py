"""The only reader of ``AUTODBG_*`` environment variables.

This module runs at interpreter start-up (when ``AUTODBG`` is true), so it
imports nothing but ``os``: no ``dataclasses`` (which pulls in ``inspect`` and
``re``, several milliseconds) and no ``signal`` (``_signal`` has the numbers).
For the same reason:

- each setting is read at its first use, not all at once: start-up uses seven
  of them (``mode``, ``stack_signal``, ``break_signal``, ``hang``, ``trace``,
  ``catch``, ``reload``, through :func:`setting`), and looking up a variable
  that is not set costs about 3 µs (``os.environ.get`` raises and catches two
  ``KeyError``), some 30 µs for the other ten. They are read when a
  session, torch or the launcher needs them;
- the class :class:`Config` is made at its first use (a session's, the
  CLI's), not at import: making a class costs more than the rest of this
  module (about 0.15 M instructions with this one's slots and methods,
  measured with callgrind), and start-up needs none.

A bad value never raises: it becomes one ``autodbg:`` warning naming the
variable, the value and the allowed ones, at the setting's first use, and
the default is used.
"""

import os

TRUE = ("1", "true", "yes", "on")
FALSE = ("", "0", "false", "no", "off")
MODES = ("auto", "console", "socket", "web", "dap", "off")
DEBUGGERS = ("ipdb", "pdb")
COLLATERAL = ("skip", "debug")
FRAMES = ("program", "innermost")
DEFAULT_WAIT = 3600.0
DEFAULT_PG_TIMEOUT = 7200.0

# Every variable autodbg reads, with its default as documented in the README's
# table (a test keeps the two in sync).
VARIABLES = {
    "AUTODBG": "unset (off)",
    "AUTODBG_MODE": "auto",
    "AUTODBG_WAIT": "3600",
    "AUTODBG_DIR": "$XDG_RUNTIME_DIR/autodbg, else /tmp/autodbg-<uid>",
    "AUTODBG_STACK_SIGNAL": "SIGUSR1",
    "AUTODBG_BREAK_SIGNAL": "SIGUSR2",
    "AUTODBG_HANG": "unset (off)",
    "AUTODBG_DEBUGGER": "ipdb when importable, else pdb",
    "AUTODBG_JOB": "set by autodbg",
    "AUTODBG_PG_TIMEOUT": "7200",
    "AUTODBG_COLLATERAL": "skip",
    "AUTODBG_LAUNCHER": "set by autodbg",
    "AUTODBG_LISTEN": "unset (no TCP)",
    "AUTODBG_REMOTE": "ssh {host}",
    "AUTODBG_KEY_FILE": "~/.config/autodbg/key",
    "AUTODBG_TRACE": "unset (none)",
    "AUTODBG_CATCH": "unset (none)",
    "AUTODBG_RELOAD": "off",
    "AUTODBG_FRAME": "program",
}


def enabled(environ=os.environ):
    """Tell whether ``AUTODBG`` asks for autodbg.

    The same test as the one line of ``autodbg.pth``: true for ``1``, ``true``,
    ``yes``, ``on`` (any case, surrounding blanks ignored).

    Args:
        environ (Mapping[str, str]): the environment to read.

    Returns:
        bool: True when autodbg should install its hooks.
    """
    return environ.get("AUTODBG", "").strip().lower() in TRUE


FIELDS = (
    "mode",
    "wait",
    "dir",
    "stack_signal",
    "break_signal",
    "debugger",
    "pg_timeout",
    "collateral",
    "launcher",
    "listen",
    "remote",
    "key_file",
    "hang",
    "trace",
    "catch",
    "reload",
    "frame",
)
_settings: dict = {}  # this process's settings read so far (from os.environ): field -> value
_config_class = None
_current = None


def setting(name):
    """Return this process's setting ``name``, read from ``os.environ`` at its first use.

    What start-up reads its settings with (see the module's docstring); the
    :class:`Config` of :func:`current` reads through it too, so each variable
    is read once per process.

    Args:
        name (str): one of ``FIELDS``, the attributes of :class:`Config`.

    Returns:
        the setting's value, as :class:`Config` documents it.
    """
    if name in _settings:
        return _settings[name]
    value = _settings[name] = _read(name, os.environ, _say)
    return value


def current():
    """Return this process's settings (of ``os.environ``, each read at its first use).

    Returns:
        Config: the same object on every call.
    """
    global _current
    if _current is None:
        _current = _config()(setting)
    return _current


def load(environ=os.environ, warn=None):
    """Return the settings of ``environ``, each read at its first use.

    Args:
        environ (Mapping[str, str]): the environment to read.
        warn (Callable[[str], None] | None): called with one line per bad value;
            None prints through :func:`autodbg.messages.say`.

    Returns:
        Config: the settings, defaults in place of bad values.
    """
    warn = warn or _say
    return _config()(lambda name: _read(name, environ, warn))


def __getattr__(name):
    # PEP 562: ``autodbg.config.Config`` is made at its first use, see _config.
    if name == "Config":
        return _config()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _config():
    """Return the class :class:`Config`, made at its first use: start-up makes no class."""
    global _config_class
    if _config_class is None:

        class Config:
            """Settings from the environment, each read at its first use; attributes cannot be changed.

            Attributes:
                mode (str): ``auto``, ``console``, ``socket``, ``web``, ``dap`` or ``off``.
                wait (float): seconds a session with no client waits for one; 0 = no wait.
                dir (str | None): ``AUTODBG_DIR``, or None for the default runtime directory.
                stack_signal (int | None): signal number that dumps every thread's stack,
                    None when ``AUTODBG_STACK_SIGNAL=off``.
                debugger (str | None): ``ipdb`` or ``pdb``; None means ipdb when importable.
                pg_timeout (float): seconds; the process-group timeout autodbg gives
                    ``init_process_group`` when the program passes none.
                collateral (str): ``skip`` (no session for a rank that fails because a
                    peer is gone or in a session) or ``debug`` (a session anyway).
                launcher (int | None): pid of the autodbg-aware torchrun launcher that
                    announces this process's sessions (``AUTODBG_LAUNCHER``, set by it).
                listen (str | None): address that sessions listen on with TCP, for
                    clients on other hosts (opt-in); None: no TCP listener.
                remote (str): the command that runs a command on another host of the
                    job, ``{host}`` standing for the host (``ssh {host}``).
                key_file (str): the per-user key file of the TCP mode's
                    challenge-response, ``~`` expanded.
                break_signal (int | None): signal number that opens a session at the
                    main thread's current frame (a live attach), None when ``off``.
                hang (float | None): seconds without progress of the main thread after
                    which the hang watchdog dumps stacks; None (unset) = no watchdog.
                trace (tuple[tuple[str, str], ...]): ``(module, qualname)`` of each
                    function of ``AUTODBG_TRACE`` (``pkg.mod:func``, ``pkg.mod:Class.method``,
                    ``__main__:func``), traced line by line; () when unset.
                catch (tuple[tuple[str, str], ...]): the same for ``AUTODBG_CATCH``: functions
                    whose exceptions open a session that can ``retry`` the call (:mod:`autodbg.retry`).
                reload (str): ``off``, or ``watch``: changed source files are reloaded
                    into the live process as they are saved.
                frame (str): where a post-mortem session opens: ``program`` (the innermost
                    frame of the program's own code, :mod:`autodbg.frames`) or
                    ``innermost`` (pdb's frame).
            """

            __slots__ = FIELDS + ("_read",)

            def __init__(self, read):
                """Keep ``read(field) -> value`` for each setting's first use."""
                object.__setattr__(self, "_read", read)

            def __getattr__(self, name):
                # Python calls this only for a slot with no value yet: the setting's first use.
                if name not in FIELDS:
                    raise AttributeError(f"autodbg.config.Config has no setting {name!r}")
                value = self._read(name)
                object.__setattr__(self, name, value)
                return value

            def __setattr__(self, name, value):
                raise AttributeError("autodbg.config.Config is read-only")

            def __repr__(self):
                fields = ", ".join(f"{n}={getattr(self, n)!r}" for n in FIELDS)
                return f"Config({fields})"

        Config.__module__, Config.__qualname__ = __name__, "Config"
        _config_class = Config
    return _config_class


def _read(name, environ, warn):
    """Return the setting ``name`` (one of ``FIELDS``) read from ``environ``."""
    # The settings that start-up uses come first.
    if name == "mode":
        mode = environ.get("AUTODBG_MODE", "auto").strip().lower() or "auto"
        if mode not in MODES:
            warn(_bad("AUTODBG_MODE", mode, "one of " + ", ".join(MODES), "auto"))
            mode = "auto"
        return mode
    if name == "stack_signal":
        return _signal_number(environ, "AUTODBG_STACK_SIGNAL", "SIGUSR1", warn)
    if name == "break_signal":
        number = _signal_number(environ, "AUTODBG_BREAK_SIGNAL", "SIGUSR2", warn)
        if number is not None and number == _signal_number(
            environ, "AUTODBG_STACK_SIGNAL", "SIGUSR1", _quiet
        ):
            # One signal cannot both dump stacks and open a session: the dump,
            # which never stops the program, keeps it.
            warn(
                f"AUTODBG_BREAK_SIGNAL is signal {number}, the stack signal too (AUTODBG_STACK_SIGNAL); "
                "the break signal is off: set AUTODBG_BREAK_SIGNAL to another signal for live attach"
            )
            return None
        return number
    if name == "hang":
        raw = environ.get("AUTODBG_HANG", "").strip()
        if raw.lower() in FALSE:
            return None
        try:
            if 0 < float(raw) < float("inf"):
                return float(raw)
        except ValueError:
            pass
        warn(_bad("AUTODBG_HANG", raw, "a number of seconds > 0, or unset", "off"))
        return None
    if name == "trace":
        return _targets(environ, "AUTODBG_TRACE", warn)
    if name == "catch":
        return _targets(environ, "AUTODBG_CATCH", warn)
    if name == "reload":
        reload = environ.get("AUTODBG_RELOAD", "").strip().lower()
        if reload in FALSE:
            return "off"
        if reload != "watch":
            warn(_bad("AUTODBG_RELOAD", reload, "watch or off", "off"))
            return "off"
        return reload
    if name == "wait":
        return _seconds(environ, "AUTODBG_WAIT", DEFAULT_WAIT, 0, warn)
    if name == "pg_timeout":
        return _seconds(environ, "AUTODBG_PG_TIMEOUT", DEFAULT_PG_TIMEOUT, 1, warn)
    if name == "dir":
        return environ.get("AUTODBG_DIR", "").strip() or None
    if name == "debugger":
        debugger = environ.get("AUTODBG_DEBUGGER", "").strip().lower() or None
        if debugger is not None and debugger not in DEBUGGERS:
            warn(_bad("AUTODBG_DEBUGGER", debugger, "ipdb or pdb", "ipdb when importable"))
            debugger = None
        return debugger
    if name == "frame":
        frame = environ.get("AUTODBG_FRAME", "").strip().lower() or "program"
        if frame not in FRAMES:
            warn(_bad("AUTODBG_FRAME", frame, "program or innermost", "program"))
            frame = "program"
        return frame
    if name == "collateral":
        collateral = environ.get("AUTODBG_COLLATERAL", "").strip().lower() or "skip"
        if collateral not in COLLATERAL:
            warn(_bad("AUTODBG_COLLATERAL", collateral, "skip or debug", "skip"))
            collateral = "skip"
        return collateral
    if name == "launcher":
        launcher = environ.get("AUTODBG_LAUNCHER", "").strip()
        return int(launcher) if launcher.isdigit() else None
    if name == "remote":
        remote = environ.get("AUTODBG_REMOTE", "").strip() or "ssh {host}"
        if "{host}" not in remote:
            warn(_bad("AUTODBG_REMOTE", remote, "a command with {host} in it", "ssh {host}"))
            remote = "ssh {host}"
        return remote
    if name == "key_file":
        return os.path.expanduser(
            environ.get("AUTODBG_KEY_FILE", "").strip() or "~/.config/autodbg/key"
        )
    return environ.get("AUTODBG_LISTEN", "").strip() or None  # listen


def _targets(environ, variable, warn):
    """Return the ``(module, qualname)`` pairs of a comma-separated ``module:qualname`` list."""
    targets = []
    for item in environ.get(variable, "").split(","):
        item = item.strip()
        if not item:
            continue
        module, _, qualname = item.partition(":")
        module, qualname = module.strip(), qualname.strip()
        names = module.split(".") + qualname.split(".")
        if all(name.isidentifier() for name in names):
            targets.append((module, qualname))
        else:
            warn(f"{variable}: {item!r} is not module:function or module:Class.method; left out")
    return tuple(targets)


def _seconds(environ, variable, default, least, warn):
    raw = environ.get(variable, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
        if least <= value < float("inf"):
            return value
    except ValueError:
        pass
    warn(_bad(variable, raw, f"a number of seconds >= {least:g}", f"{default:g}"))
    return default


def _signal_number(environ, variable, default, warn):
    import _signal

    raw = environ.get(variable, "").strip()
    if not raw:
        return getattr(_signal, default)
    if raw.lower() in FALSE:
        return None
    name = raw.upper()
    if not name.startswith("SIG"):
        name = "SIG" + name
    number = raw if raw.isdigit() else getattr(_signal, name, None)
    try:
        number = int(number)
    except (TypeError, ValueError):
        number = None
    if (
        number is None
        or number in (_signal.SIGKILL, _signal.SIGSTOP)
        or not 0 < number < _signal.NSIG
    ):
        warn(_bad(variable, raw, "a signal name (USR1, SIGUSR2) or number, or off", default))
        return getattr(_signal, default)
    return number


def _quiet(line):
    """A ``warn`` that says nothing: for a second reading of a setting already warned about."""


def _say(line):
    from autodbg.messages import say  # only when a value is bad: not on the start-up path

    say(line)


def _bad(variable, value, allowed, default):
    return f"{variable}={value!r} is not valid (expected {allowed}); using the default, {default}"
