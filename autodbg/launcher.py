"""torchrun's side: the launcher announces its workers' sessions and keeps the job alive for them.

``autodbg.pth`` runs in the torchrun process too. There, once torch's elastic
modules are imported, autodbg:

* announces each new session of its workers (and their children) on the
  launcher's stderr, so it shows even with ``--redirects``, ``--tee`` or
  ``--local-ranks-filter``;
* does not stop the workers while one of them has a session open: when
  another worker exits, torchrun's process context (``PContext.close`` in
  ``torch/distributed/elastic/multiprocessing/api.py``, reached from its
  ``_poll`` and from the agent's ``_shutdown``) SIGTERMs every worker and
  SIGKILLs them 30 s later; autodbg holds that call until the sessions end,
  or ``AUTODBG_WAIT`` passes with no client attached;
* turns a Ctrl-C typed while a worker's debugger owns the terminal into
  SIGINT for that worker, so it interrupts the debugger command instead of
  the job: workers run in sessions of their own (``start_new_session``), so
  only torchrun receives the terminal's SIGINT, and its
  ``_terminate_process_handler`` would stop the whole job;
* restores the terminal's modes when the launcher exits.

Each torch function patched here is checked by name and signature first; a
torch that changed it gets one ``autodbg:`` line and torch's own behaviour.
tests/test_launcher.py has a test per behaviour relied on.
"""

import atexit
import os
import signal
import threading
import time

from autodbg import config, registry
from autodbg.messages import say

POLL = 0.5  # seconds between looks at the runtime directory


def patch_processes(api):
    """Patch ``torch.distributed.elastic.multiprocessing.api``; save the terminal's modes.

    ``PContext.close`` holds while a worker has a session open (see the module
    docstring); ``_terminate_process_handler`` forwards Ctrl-C to a worker whose
    debugger owns the terminal.

    Args:
        api (types.ModuleType): the just-imported module.
    """
    import inspect

    handler = getattr(api, "_terminate_process_handler", None)
    close = getattr(getattr(api, "PContext", None), "close", None)
    if not callable(handler) or close is None or list(inspect.signature(close).parameters) != [
        "self",
        "death_sig",
        "timeout",
    ]:
        say("this torch's elastic launcher is not the one autodbg knows; workers in a session are not protected")
        return

    def terminate_process_handler(signum, frame):
        if signum == signal.SIGINT:
            owner = _terminal_owner()
            if owner is not None:
                os.kill(owner["pid"], signal.SIGINT)
                return None
        return handler(signum, frame)

    def close_processes(self, death_sig=None, timeout=30):
        # No signal or SIGTERM is the agent's own decision (a worker exited, or the
        # run ended); another signal is the user's (Ctrl-C, kill): stop at once.
        if death_sig in (None, signal.SIGTERM):
            _hold_while_sessions_open()
        return close(self, death_sig, timeout)

    api._terminate_process_handler = terminate_process_handler
    api.PContext.close = close_processes
    _save_terminal_modes()


def patch_agent(module):
    """Patch ``LocalElasticAgent._start_workers`` to announce its workers' sessions.

    Args:
        module (types.ModuleType): ``torch.distributed.elastic.agent.server.local_elastic_agent``.
    """
    agent = getattr(module, "LocalElasticAgent", None)
    start = getattr(agent, "_start_workers", None)
    if start is None:
        say("this torch's LocalElasticAgent has no _start_workers; sessions are not announced by torchrun")
        return

    def _start_workers(self, worker_group):
        pids = start(self, worker_group)
        _Announcer.start()
        return pids

    agent._start_workers = _start_workers
    # Workers inherit this: their sessions leave the announcement to the launcher.
    os.environ["AUTODBG_LAUNCHER"] = str(os.getpid())


def _sessions():
    """Return the open session records of this launcher's descendants."""
    import psutil

    try:
        root = registry.runtime_dir(config.current().dir)
        descendants = {p.pid for p in psutil.Process().children(recursive=True)}
    except (registry.RuntimeDirError, psutil.Error):
        return []
    return [r for r in registry.sessions(root) if r["pid"] in descendants]


def _terminal_owner():
    for record in _sessions():
        if record.get("socket") is None and record.get("state") == "attached":
            return record
    return None


def _who(record):
    if record.get("rank") is None:
        return f"pid {record['pid']}"
    if record.get("role"):
        return f"rank {record['rank']} / {record['role']} (pid {record['pid']})"
    return f"rank {record['rank']}"


def _target(record):
    # A child shares its parent's rank: only its pid names it alone (as session._target).
    if record.get("rank") is None or record.get("role"):
        return record["pid"]
    return record["rank"]


def _hold_while_sessions_open():
    wait = config.current().wait
    deadline = time.monotonic() + wait
    said = False
    held = set()
    while True:
        open_sessions = _sessions()
        if not open_sessions:
            _let_exit(held)
            return
        held.update(r["pid"] for r in open_sessions)
        if any(r["state"] == "attached" for r in open_sessions):
            deadline = time.monotonic() + wait  # somebody is debugging: the clock starts when they leave
        names = ", ".join(_who(r) for r in open_sessions)
        if not said:
            say(
                f"a worker exited, but {names} has a debugger session open: the job keeps running "
                f"until it ends (at most {wait:g} s without a client; autodbg attach {_target(open_sessions[0])})"
            )
            said = True
        if time.monotonic() > deadline:
            say(f"no client on {names}'s session within {wait:g} s (AUTODBG_WAIT); stopping the job")
            return
        time.sleep(POLL)


def _let_exit(pids, timeout=10):
    """Wait up to ``timeout`` seconds for processes whose session ended to exit by themselves.

    A session removes its record just before its process exits with its own
    status; a SIGTERM in between would replace that status (and the root cause
    torchrun reports) with -15.
    """
    import psutil

    processes = []
    for pid in pids:
        try:
            processes.append(psutil.Process(pid))
        except psutil.Error:
            pass
    psutil.wait_procs(processes, timeout=timeout)


class _Announcer:
    """A daemon thread that prints one line for each new session of the launcher's workers."""

    _thread = None

    @classmethod
    def start(cls):
        if cls._thread is None:
            cls._thread = threading.Thread(target=cls._run, name="autodbg-announcer", daemon=True)
            cls._thread.start()

    @staticmethod
    def _run():
        seen = set()
        while True:
            for record in _sessions():
                key = (record["pid"], record.get("started"))
                if key in seen:
                    continue
                seen.add(key)
                if record.get("socket") is None:
                    continue  # on the terminal: its prompt says it all, a line would only garble it
                what = record.get("exception") or "breakpoint()"
                say(
                    f"{_who(record)} is in a debugger session: {what} at {record['where']}; "
                    f"attach with: autodbg attach {_target(record)}  (or: nc -U {record['socket']})"
                )
            time.sleep(POLL)


def _save_terminal_modes():
    import termios

    try:
        modes = termios.tcgetattr(0)
    except termios.error:
        return  # no terminal on stdin: nothing to restore

    def restore():
        try:
            termios.tcsetattr(0, termios.TCSADRAIN, modes)
        except termios.error:
            pass

    atexit.register(restore)
