"""torchrun's side: the launcher announces its workers' sessions and keeps the job alive for them.

``autodbg.pth`` runs in the torchrun process too. There, once torch's elastic
modules are imported, autodbg relies on these behaviours of torch's, each with
its test (in tests/test_launcher.py unless named otherwise):

* torchrun's agent starts its workers in ``LocalElasticAgent._start_workers``
  (``torch/distributed/elastic/agent/server/local_elastic_agent.py``): from
  then on autodbg announces each new session of its workers (and their
  children) on the launcher's stderr, so it shows even with ``--redirects``,
  ``--tee`` or ``--local-ranks-filter``
  (test_torchrun.py::test_rank_session_attach_detach_and_quit); but never
  while a worker's debugger has the terminal: that session names the others
  before its next prompt (test_shared_terminal.py);
* ``_start_workers(worker_group)`` runs after ``_rendezvous`` set the group's
  ``master_addr``, ``master_port``, ``group_rank`` and ``store`` (the
  rendezvous backend's store under a ``PrefixStore``): autodbg writes the
  node's job record from them (:mod:`autodbg.discovery`;
  test_discovery.py::test_c10d_rendezvous_endpoint_leads_to_the_workers_store);
* when a worker exits, torchrun's process context (``PContext.close`` in
  ``torch/distributed/elastic/multiprocessing/api.py``, reached from
  ``SubprocessContext._poll`` and from the agent's ``_shutdown``) SIGTERMs every
  worker and SIGKILLs them 30 s later: autodbg holds that call while a worker
  has a session open, until the sessions end, or ``AUTODBG_WAIT`` passes with
  no client attached (test_worker_exit_does_not_kill_a_rank_in_session);
* after that call, ``SubprocessContext._poll`` records the exit status of the
  workers that ended meanwhile (its second ``_capture_process_failures``, from
  each worker's ``Popen.poll()``) in the dict of failures that torchrun's
  summary lists: so autodbg waits for the held workers without reaping them
  (``waitid`` with ``WNOWAIT``); reaped, ``Popen`` would take them for workers
  that exited with status 0 (test_summary_lists_every_failed_rank);
* torchrun's signal handler (``_terminate_process_handler``, installed by
  ``PContext.start`` for SIGTERM, SIGINT, SIGHUP and SIGQUIT) raises
  ``SignalException``; the agent (``SimpleElasticAgent.run``) then closes its
  workers with that signal and torchrun exits with status 1. A signal from
  outside (``timeout``, ``scancel``, a preemption, the user's ``kill``) means
  that the job must go: once torch's handler raised, autodbg holds nothing,
  and says in one line which sessions end with the job
  (test_timeout_ends_a_hung_job_as_without_autodbg,
  test_a_signal_from_outside_ends_the_job_and_its_sessions);
* workers run in sessions of their own (``start_new_session``), so only
  torchrun receives the terminal's SIGINT: a Ctrl-C typed while a worker's
  debugger owns the terminal is passed on to that worker, so that it
  interrupts the debugger command instead of the job; to torch's handler if
  that worker is gone (test_ctrl_c_interrupts_the_debugger_not_the_job,
  test_ctrl_c_for_a_worker_that_is_gone_is_torchruns);
* the launcher restores the terminal's modes when it exits, if it is in the
  terminal's foreground process group: from a background job, ``tcsetattr``
  would stop it with SIGTTOU (test_a_background_job_on_the_terminal_ends).

Each torch function patched here is checked by name (and ``PContext.close`` by
signature) first; a torch that changed it gets one ``autodbg:`` line and
torch's own behaviour. The replacements take ``*args, **kwargs`` and pass them
on (``functools.wraps``), and autodbg's part in them, like the announcer
thread (``autodbg-announcer``), runs under :mod:`autodbg.guard`: an error
there is one line and torch's behaviour
(test_an_error_in_the_signal_handler_is_one_line_and_torchs_handler,
test_an_error_in_the_announcer_is_one_line).
"""

import atexit
import functools
import os
import signal
import threading
import time

from autodbg import config, guard, registry
from autodbg.messages import say

POLL = 0.5  # seconds between looks at the runtime directory


class _Signalled:
    """The ``SignalException`` torchrun's handler raised: a signal from outside ends the job, nothing held."""

    error = None
    told = False  # whether the line about the sessions it ends was printed


def patch_processes(api):
    """Patch ``torch.distributed.elastic.multiprocessing.api``; save the terminal's modes.

    ``PContext.close`` holds while a worker has a session open, unless torchrun
    got a signal from outside; ``_terminate_process_handler`` notes such a
    signal and forwards Ctrl-C to a worker whose debugger owns the terminal
    (see the module docstring).

    Args:
        api (types.ModuleType): the just-imported module.
    """
    import inspect

    handler = getattr(api, "_terminate_process_handler", None)
    close = getattr(getattr(api, "PContext", None), "close", None)
    signal_exception = getattr(api, "SignalException", None)
    if (
        not callable(handler)
        or not isinstance(signal_exception, type)
        or close is None
        or list(inspect.signature(close).parameters) != ["self", "death_sig", "timeout"]
    ):
        say(
            "this torch's elastic launcher is not the one autodbg knows; workers in a session are not protected"
        )
        return

    @functools.wraps(handler)
    def terminate_process_handler(*args, **kwargs):
        if guard.call(
            "torchrun's signal handler", _forward_ctrl_c, *args, otherwise=lambda: False, **kwargs
        ):
            return None
        try:
            return handler(*args, **kwargs)
        except signal_exception as error:
            _Signalled.error = error
            raise

    @functools.wraps(close)
    def close_processes(self, *args, **kwargs):
        error = guard.call(
            "torchrun's closing of its workers", _before_close, signal_exception, *args, **kwargs
        )
        if error is not None:
            raise error  # torchrun got a signal while autodbg held the close, as if in torch's own wait
        return close(self, *args, **kwargs)

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
        say(
            "this torch's LocalElasticAgent has no _start_workers; sessions are not announced by torchrun"
        )
        return

    @functools.wraps(start)
    def _start_workers(*args, **kwargs):
        pids = start(*args, **kwargs)
        guard.call("torchrun's announcer", _Announcer.start)
        guard.call("the job record", _record_job, *args, **kwargs)
        return pids

    agent._start_workers = _start_workers
    # Workers inherit this: their sessions leave the announcement to the launcher.
    os.environ["AUTODBG_LAUNCHER"] = str(os.getpid())


_job_records: dict = {}  # workers' store "HOST:PORT" -> its discovery.Announcement


def _record_job(agent, worker_group, *args, **kwargs):
    """Write this node's job record for the workers just started (:mod:`autodbg.discovery`).

    Reads what torch's agent decided in ``_rendezvous`` (torch 2.13,
    ``torch/distributed/elastic/agent/server/api.py``): the worker group's
    ``master_addr``/``master_port`` (the workers' store), ``group_rank``,
    ``group_world_size``, ``workers`` (their ``global_rank``), and its
    ``store``, a ``PrefixStore`` over the rendezvous backend's store (for
    c10d, a ``TCPStore`` at the endpoint).
    Once per workers' store: a restart in the same store keeps its record.
    """
    import torch.distributed as dist

    from autodbg import discovery, identity

    address = f"{worker_group.master_addr}:{worker_group.master_port}"
    if address in _job_records:
        return
    backend = worker_group.store
    while isinstance(backend, dist.PrefixStore):
        backend = backend.underlying_store
    rendezvous = None
    if isinstance(backend, dist.TCPStore) and f"{backend.host}:{backend.port}" != address:
        rendezvous = f"{backend.host}:{backend.port}"
    run_id = worker_group.spec.rdzv_handler.get_run_id()
    workers = {
        "RANK": "0",
        "TORCHELASTIC_RUN_ID": run_id,
        "MASTER_ADDR": str(worker_group.master_addr),
        "MASTER_PORT": str(worker_group.master_port),
    }
    record = discovery.node_record(
        identity.from_env(workers).job,  # the job folder the workers' identity names
        run_id,
        address,
        rendezvous,
        worker_group.group_rank,
        nnodes=worker_group.group_world_size,
        ranks=sorted(worker.global_rank for worker in worker_group.workers),
    )
    for earlier in _job_records.values():
        earlier.withdraw()  # a new round in another store: the old record is stale
    _job_records.clear()
    _job_records[address] = discovery.Announcement(record)
    _job_records[address].publish()


def _forward_ctrl_c(signum, frame=None):
    """Pass a Ctrl-C on to the worker whose debugger owns the terminal.

    Returns:
        bool: True when forwarded (torch's handler must not run).
    """
    if signum == signal.SIGINT:
        owner = _terminal_owner()
        if owner is not None:
            try:
                os.kill(owner["pid"], signal.SIGINT)
                return True
            except ProcessLookupError:
                pass  # it just exited: the Ctrl-C is for the job, as without autodbg
    return False


def _before_close(signal_exception, death_sig=None, timeout=30):
    """Hold ``PContext.close`` while sessions are open, unless torchrun got a signal from outside.

    Blocks up to ``AUTODBG_WAIT`` seconds after the last client leaves.

    Args:
        signal_exception (type): torchelastic's ``SignalException``.
        death_sig (signal.Signals | None): as ``PContext.close`` (None is SIGTERM).
        timeout (float): as ``PContext.close``; not used here.

    Returns:
        BaseException | None: a ``SignalException`` that torchrun's handler
        raised meanwhile (for the caller to raise, as torch's close would have),
        or None to go on with torch's close.
    """
    if _Signalled.error is None:
        if death_sig not in (None, signal.SIGTERM):
            return None
        # With no signal from outside, this is the agent's own decision: a
        # worker exited, or the run ended.
        try:
            _hold_while_sessions_open()
        except signal_exception as error:
            return error
        return _Signalled.error  # raised under the hold, and caught by code there: still the end
    if not _Signalled.told:
        _Signalled.told = True
        open_sessions = []
        for _ in range(3):  # timeout sends its signal twice: to torchrun, then to its process group
            try:
                open_sessions = _sessions()
                break
            except signal_exception:
                pass  # the job is ending already: torch's close runs all the same
        if open_sessions:
            names = ", ".join(_who(r) for r in open_sessions)
            ends = "session ends" if len(open_sessions) == 1 else "sessions end"
            say(
                f"torchrun got {signal.Signals(_Signalled.error.sigval).name}: ending the job; {names}'s debugger {ends}"
            )
    return None


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
        # A session that waited on its socket for the terminal still lists the socket.
        if record.get("state") == "attached" and (
            record.get("socket") is None or record.get("console")
        ):
            return record
    return None


def _say_between_prompts(lines):
    """Print ``lines`` unless a debugger session has the terminal (never over its prompt).

    Holds the terminal lock while it prints (:func:`autodbg.backends.console.between_prompts`);
    never blocks.

    Args:
        lines (list[str]): the lines, without the ``autodbg:`` prefix.

    Returns:
        bool: True when the lines are printed, or need not be: one of the
        launcher's workers has the terminal, and its session names the other
        sessions itself before it draws its next prompt (:mod:`autodbg.session`).
        False when another process's session has it: try again later.
    """
    from autodbg.backends import console

    try:
        root = registry.runtime_dir(config.current().dir)
    except registry.RuntimeDirError:
        return True  # no session can hold the terminal without the runtime directory
    with console.between_prompts(root) as free:
        if free:
            for line in lines:
                say(line)
    return free or _terminal_owner() is not None


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
    while _Signalled.error is None:  # a signal from outside ends the hold
        open_sessions = _sessions()
        if not open_sessions:
            _let_exit(held)
            return
        held.update(r["pid"] for r in open_sessions)
        if any(r["state"] == "attached" for r in open_sessions):
            # Somebody is debugging: the clock starts when they leave.
            deadline = time.monotonic() + wait
        names = ", ".join(_who(r) for r in open_sessions)
        if not said:
            have = "has a debugger session" if len(open_sessions) == 1 else "have debugger sessions"
            line = (
                f"a worker exited, but {names} {have} open: the job keeps running until it ends "
                f"(at most {wait:g} s without a client; autodbg attach {_target(open_sessions[0])})"
            )
            said = _say_between_prompts([line])
        if time.monotonic() > deadline:
            say(
                f"no client on {names}'s session within {wait:g} s (AUTODBG_WAIT); stopping the job"
            )
            return
        time.sleep(POLL)


def _let_exit(pids, timeout=10):
    """Wait up to ``timeout`` seconds for processes whose session ended to exit by themselves.

    A session removes its record just before its process exits with its own
    status; a SIGTERM in between would replace that status (and the root cause
    torchrun reports) with -15. The wait does not reap torchrun's workers:
    their ``Popen`` must read their status itself (see the module docstring).
    """
    deadline = time.monotonic() + timeout
    running = set(pids)
    while running:
        running = {pid for pid in running if _running(pid)}
        if not running or time.monotonic() > deadline:
            return
        time.sleep(0.05)


def _running(pid):
    """Tell whether ``pid`` has not exited yet, without reaping it."""
    import psutil

    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None
    except ChildProcessError:  # not torchrun's child (a worker's own child): its parent reaps it
        try:
            return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False


class _Announcer:
    """A daemon thread that prints one line for each new session of the launcher's workers.

    Never while one of them has the terminal (:func:`_say_between_prompts`).
    """

    _thread = None

    @classmethod
    def start(cls):
        """Start the thread, once; it runs until the launcher exits (or, after an error, ends)."""
        if cls._thread is None:
            cls._thread = threading.Thread(target=cls._run, name="autodbg-announcer", daemon=True)
            cls._thread.start()

    @staticmethod
    @guard.protect("torchrun's announcer")
    def _run():
        seen = set()
        while True:
            fresh = {}
            for record in _sessions():
                key = (record["pid"], record.get("started"))
                if key in seen or record.get("state") == "opening":
                    continue  # announced already, or its socket is not open yet
                if record.get("socket") is None:
                    seen.add(key)  # on the terminal: its session's header says it all
                    continue
                fresh[key] = (
                    f"{_who(record)} is in a debugger session: "
                    f"{record.get('exception') or 'breakpoint()'} at {record['where']}; "
                    f"attach with: autodbg attach {_target(record)}  (or: nc -U {record['socket']})"
                )
            if fresh and _say_between_prompts(list(fresh.values())):
                seen.update(fresh)
            time.sleep(POLL)


def _save_terminal_modes():
    import termios

    try:
        modes = termios.tcgetattr(0)
    except termios.error:
        return  # no terminal on stdin: nothing to restore

    @guard.protect("the restoring of the terminal's modes")
    def restore():
        try:
            if os.tcgetpgrp(0) != os.getpgrp():
                return  # a background job: tcsetattr would stop it (SIGTTOU), and the shell owns the modes
            termios.tcsetattr(0, termios.TCSADRAIN, modes)
        except (termios.error, OSError):
            pass  # the terminal is gone

    atexit.register(restore)
