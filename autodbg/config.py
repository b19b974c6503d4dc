"""The only reader of ``AUTODBG_*`` environment variables.

This module runs at interpreter start-up (when ``AUTODBG`` is true), so it
imports nothing but ``os``: no ``dataclasses`` (which pulls in ``inspect`` and
``re``, several milliseconds) and no ``signal`` (``_signal`` has the numbers).
A bad value never raises: it becomes one ``autodbg:`` warning naming the
variable, the value and the allowed ones, and the default is used.
"""

import os

TRUE = ("1", "true", "yes", "on")
FALSE = ("", "0", "false", "no", "off")
MODES = ("auto", "console", "socket", "off")
DEBUGGERS = ("ipdb", "pdb")
COLLATERAL = ("skip", "debug")
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
    "AUTODBG_LISTEN": "127.0.0.1",
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


class Config:
    """Settings read once from the environment; attributes cannot be changed.

    Attributes:
        mode (str): ``auto``, ``console``, ``socket`` or ``off``.
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
        listen (str): address a multi-node job's sessions listen on with TCP.
        break_signal (int | None): signal number that opens a session at the
            main thread's current frame (a live attach), None when ``off``.
        hang (float | None): seconds without progress of the main thread after
            which the hang watchdog dumps stacks; None (unset) = no watchdog.
    """

    __slots__ = (
        "mode", "wait", "dir", "stack_signal", "break_signal", "debugger",
        "pg_timeout", "collateral", "launcher", "listen", "hang",
    )

    def __init__(self, **fields):
        """Set every attribute in ``__slots__`` from ``fields`` (keyword arguments).

        Raises:
            TypeError: a field is missing or unknown.
        """
        if set(fields) != set(self.__slots__):
            raise TypeError(f"Config needs exactly {self.__slots__}, got {sorted(fields)}")
        for name, value in fields.items():
            object.__setattr__(self, name, value)

    def __setattr__(self, name, value):
        raise AttributeError("autodbg.config.Config is read-only")

    def __repr__(self):
        fields = ", ".join(f"{n}={getattr(self, n)!r}" for n in self.__slots__)
        return f"Config({fields})"


def load(environ=os.environ, warn=None):
    """Read every ``AUTODBG_*`` variable.

    Args:
        environ (Mapping[str, str]): the environment to read.
        warn (Callable[[str], None] | None): called with one line per bad value;
            None prints through :func:`autodbg.messages.say`.

    Returns:
        Config: the settings, defaults in place of bad values.
    """
    warn = warn or _say

    mode = environ.get("AUTODBG_MODE", "auto").strip().lower() or "auto"
    if mode not in MODES:
        warn(_bad("AUTODBG_MODE", mode, "one of " + ", ".join(MODES), "auto"))
        mode = "auto"

    wait = _seconds(environ, "AUTODBG_WAIT", DEFAULT_WAIT, 0, warn)
    pg_timeout = _seconds(environ, "AUTODBG_PG_TIMEOUT", DEFAULT_PG_TIMEOUT, 1, warn)

    directory = environ.get("AUTODBG_DIR", "").strip() or None

    stack_signal = _signal_number(environ, "AUTODBG_STACK_SIGNAL", "SIGUSR1", warn)
    break_signal = _signal_number(environ, "AUTODBG_BREAK_SIGNAL", "SIGUSR2", warn)

    debugger = environ.get("AUTODBG_DEBUGGER", "").strip().lower() or None
    if debugger is not None and debugger not in DEBUGGERS:
        warn(_bad("AUTODBG_DEBUGGER", debugger, "ipdb or pdb", "ipdb when importable"))
        debugger = None

    collateral = environ.get("AUTODBG_COLLATERAL", "").strip().lower() or "skip"
    if collateral not in COLLATERAL:
        warn(_bad("AUTODBG_COLLATERAL", collateral, "skip or debug", "skip"))
        collateral = "skip"

    launcher = environ.get("AUTODBG_LAUNCHER", "").strip()
    launcher = int(launcher) if launcher.isdigit() else None

    listen = environ.get("AUTODBG_LISTEN", "").strip() or "127.0.0.1"

    hang = None
    raw = environ.get("AUTODBG_HANG", "").strip()
    if raw.lower() not in FALSE:
        try:
            hang = float(raw) if 0 < float(raw) < float("inf") else None
        except ValueError:
            pass
        if hang is None:
            warn(_bad("AUTODBG_HANG", raw, "a number of seconds > 0, or unset", "off"))

    return Config(
        mode=mode,
        wait=wait,
        dir=directory,
        stack_signal=stack_signal,
        break_signal=break_signal,
        debugger=debugger,
        pg_timeout=pg_timeout,
        collateral=collateral,
        launcher=launcher,
        listen=listen,
        hang=hang,
    )


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
    if number is None or number in (_signal.SIGKILL, _signal.SIGSTOP) or not 0 < number < _signal.NSIG:
        warn(_bad(variable, raw, "a signal name (USR1, SIGUSR2) or number, or off", default))
        return getattr(_signal, default)
    return number


def _say(line):
    from autodbg.messages import say  # only when a value is bad: not on the start-up path

    say(line)


def _bad(variable, value, allowed, default):
    return f"{variable}={value!r} is not valid (expected {allowed}); using the default, {default}"


_current = None


def current():
    """Return this process's settings, read from the environment on first use.

    Returns:
        Config: the same object on every call.
    """
    global _current
    if _current is None:
        _current = load()
    return _current
