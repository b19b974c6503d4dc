"""The DAP backend (``AUTODBG_MODE=dap``): a post-mortem session that VS Code attaches to.

The Debug Adapter Protocol is what VS Code, PyCharm's and Neovim's DAP
clients speak; debugpy is its Python server. A post-mortem session of this
mode starts, only then, debugpy's adapter on loopback at a port the kernel
picks (:func:`debugpy.listen` with port 0: it runs the adapter in a
subprocess and returns its address), keeps the address in the session's
record (``dap: "127.0.0.1:PORT"``, which ``autodbg ls`` shows), prints one
line with the ``launch.json`` attach entry, and waits up to ``AUTODBG_WAIT``
seconds for a client to finish its configuration (``configurationDone``).
Then it stops the failing thread on the exception, with the whole stack of
its traceback and the innermost frame as the current one, and returns when
the client resumes or disconnects: the process then ends as it would have,
with its own exit status.

How it stops is Ray's post-mortem debugger's (``ray/util/debugpy.py``,
``_debugpy_excepthook``): pydevd's handling of an unhandled exception, called
by hand from the excepthook, with the thread marked as tracing so that
pydevd does not trace its own stop. Where debugpy has it (1.8.22 does,
1.8.0 does not), its public :func:`debugpy.trigger_exception_handler` does the same and also
pauses Python 3.12's ``sys.monitoring`` for the stop. Unlike Ray's (which
goes through the client's "uncaught exceptions" filter), the stop does not
depend on the client's exception breakpoints: the program has already failed,
and the session exists for this stop alone. Which frames the client shows is
its own just-my-code setting (VS Code's ``justMyCode``, on by default, hides
library frames as ``AUTODBG_FRAME=program`` does).

debugpy is imported here alone, when such a session opens: it is an optional
extra (``pip install 'autodbg[dap]'``). Without it the session says so in
one line and the caller opens its usual socket session instead.
"""

import json
import os
import sys
import threading
import time

from autodbg.messages import say

HOST = "127.0.0.1"  # loopback only: a client on another host comes through ssh -L
POLL = 0.05  # seconds between looks at whether a client has attached
_address = None  # (host, port) of this process's adapter: debugpy listens once per process
_lock = threading.Lock()


def attach_entry(port):
    """Return the ``launch.json`` configuration that attaches VS Code to this session.

    Args:
        port (int): the adapter's TCP port on loopback.

    Returns:
        dict: ``{"type": "debugpy", "request": "attach", "connect": {...}}``.
    """
    return {
        "name": "autodbg",
        "type": "debugpy",
        "request": "attach",
        "connect": {"host": HOST, "port": port},
    }


def post_mortem(session, publication, exc, tb):
    """Run the DAP session of a post-mortem: listen, wait for a client, stop at the exception.

    Blocks until the client resumes or disconnects, or for up to
    ``AUTODBG_WAIT`` seconds when none comes (none at all when it is 0), or
    until the program ends the session's wait (:meth:`autodbg.clients.Clients.stop_waiting`).

    Args:
        session (autodbg.session.Session): the open session (its settings, clients
            and identity).
        publication (autodbg.session._Record): the session's record, given the
            ``dap`` address and the state (``waiting``, ``attached``).
        exc (BaseException): the uncaught exception.
        tb (types.TracebackType): its traceback.

    Returns:
        bool: False when debugpy cannot be imported (said in one line): the
        caller opens its usual session instead; True otherwise.
    """
    try:
        import debugpy
    except ImportError:
        say("AUTODBG_MODE=dap needs debugpy: pip install 'autodbg[dap]'")
        return False
    wait = session.config.wait
    if wait <= 0:
        return True
    # pydevd warns as it starts that frozen modules may make it miss breakpoints:
    # a post-mortem sets none, and the warning would be four lines of noise.
    os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    try:
        host, port = _listen(debugpy)
    except Exception as error:  # debugpy's adapter would not start: no session, the exit as usual
        say(
            f"cannot start debugpy's adapter ({type(error).__name__}: {error}); no debugger session"
        )
        return True
    publication.update({"dap": f"{host}:{port}"})
    publication.publish("waiting")
    entry = json.dumps({k: v for k, v in attach_entry(port).items() if k != "name"})
    say(
        f"{session.exception} at {session.where}: DAP (VS Code) session on {host}:{port}, "
        f"waiting up to {wait:g} s: attach with {entry}"
    )
    if not _client_came(debugpy, session.clients, time.monotonic() + wait):
        if not session.clients.ending:
            say(f"no DAP client came within {wait:g} s; the session ends")
        return True
    publication.publish("attached")
    _stop(debugpy, (type(exc), exc, tb))
    return True


def _listen(debugpy):
    global _address
    with _lock:
        if _address is None:
            hook = sys.breakpointhook
            try:
                _address = tuple(debugpy.listen((HOST, 0)))
            finally:
                # pydevd takes breakpoint() as it starts; it stays autodbg's (another thread's).
                sys.breakpointhook = hook
        return _address


def _forget_address():
    # A forked child has no adapter of its own; its debugpy state is the parent's copy.
    global _address, _lock
    _address, _lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_address)


def _client_came(debugpy, clients, deadline):
    # debugpy.wait_for_client() blocks without a bound: look instead, until the deadline.
    while not debugpy.is_client_connected():
        if clients.ending or time.monotonic() >= deadline:
            return False
        time.sleep(POLL)
    return True


def _stop(debugpy, excinfo):
    """Stop the calling thread on ``excinfo`` for the attached client; return when it resumes."""
    trigger = getattr(debugpy, "trigger_exception_handler", None)
    if trigger is not None:
        trigger(excinfo, as_uncaught=False)
        return
    # An older debugpy (1.8.0): pydevd's own stop, as Ray's post-mortem calls it.
    import pydevd

    py_db = pydevd.get_global_debugger()
    thread = threading.current_thread()
    info = py_db.set_additional_thread_info(thread)
    tb = excinfo[2]
    frames = {}
    while tb is not None:
        frames[id(tb.tb_frame)] = last = tb.tb_frame
        tb = tb.tb_next
    info.is_tracing += 1  # pydevd must not trace the frames of its own stop
    try:
        py_db.do_stop_on_unhandled_exception(thread, last, frames, excinfo)
    finally:
        info.is_tracing -= 1
