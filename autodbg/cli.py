"""The ``autodbg`` command line: one function per verb.

Exit status: 0 on success, 1 when the verb fails at run time (no such
session, busy session, unsafe runtime directory), 2 on a usage error
(argparse's convention).
"""

import argparse
import json
import os
import sys

from autodbg import __version__, config, registry


class CliError(Exception):
    """A run-time failure; its message is printed as one ``autodbg:`` line, exit status 1."""


def cmd_ls(args):
    """List the open sessions, newest job first."""
    records = _sessions(args)
    if args.json:
        print(json.dumps(records, indent=2))
        return 0
    if not records:
        print("no open sessions")
        return 0
    rows = [("JOB", "RANK", "ROLE", "PID", "HOST", "STATE", "EXCEPTION", "WHERE")]
    for r in records:
        rank = "-" if r.get("rank") is None else str(r["rank"])
        if r.get("world_size") is not None and r.get("rank") is not None:
            rank = f"{r['rank']}/{r['world_size']}"
        state = str(r.get("state"))
        if r.get("dap"):
            state += f" (DAP {r['dap']})"  # a DAP client's address (autodbg.backends.dap)
        elif state == "attached" and not r.get("socket"):
            state += " (page)" if r.get("web") else " (terminal)"
        rows.append(
            (
                str(r.get("job")),
                rank,
                r.get("role") or "-",  # what a child process is to its parent (autodbg.children)
                str(r["pid"]),
                str(r.get("host")),
                state,
                r.get("exception") or "breakpoint()",
                str(r.get("where")),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1])
    return 0


OPENING_WAIT = 10.0  # seconds: bound on a session's opening (its crash record takes up to 2 s)


def cmd_attach(args):
    """Attach this terminal to a session, chosen by rank or pid.

    A session of another node (another host, or this host under another
    runtime directory) without a TCP address is attached to on its node:
    ``autodbg attach --pid N`` run there through :mod:`autodbg.transport`,
    whose exit status this returns; so is a running rank of another node
    (``attach --rank N`` there, a live attach).

    A process with a session record in any state is in a session: it is never
    sent the break signal. One whose session is still ``opening`` (writing its
    crash record, opening its socket) is waited for, up to :data:`OPENING_WAIT`
    seconds.
    """
    from autodbg import client

    try:
        record = _resolve(_local_first(args), args.target, args.by, args.job)
    except CliError:
        process = _running(args)
        if process is None:
            node = _node_of_rank(args)
            if node is None:
                raise
            # A running rank of another node: its own node's CLI breaks in.
            ask = ["attach", "--rank", str(args.target), "--job", str(node["job"])]
            return _attach_through_transport(node, ask, args.commands, f"rank {args.target}")
        record = _break_in(process["pid"], process)
    who = _describe(record)
    node = None if record.get("tcp") else _node_elsewhere(record, args)
    if node is not None and record.get("dap"):
        port = record["dap"].rpartition(":")[2]
        raise CliError(
            f"{who} is a DAP session on {node['host']}: forward its port "
            f"(ssh -L {port}:{record['dap']} {node['host']}), then attach VS Code (debugpy) "
            f"to 127.0.0.1:{port}"
        )
    if node is not None:
        # Its node's CLI waits for an opening session and says if it is busy or on a terminal.
        ask = ["attach", "--pid", str(record["pid"]), "--job", str(record["job"])]
        return _attach_through_transport(node, ask, args.commands, who)
    if record.get("state") == "opening":
        record = _opened(record)
    if record.get("web"):
        raise CliError(
            f"{who} is a web session: open {record['web']} with the token its process printed"
        )
    if record.get("dap"):
        raise CliError(f"{who} is a DAP session: attach VS Code (debugpy) to {record['dap']}")
    if not record.get("socket"):
        raise CliError(
            f"{who} is in a debugger on its own terminal; it cannot be attached from here"
        )
    # Not refused here when the record says `attached`: its client may be leaving, and
    # the session itself turns a client away while it has another one (one line: busy).
    try:
        client.attach(record, args.commands)
    except client.AttachError as error:
        raise CliError(f"{who}: {error}") from None
    return 0


def _local_first(args):
    """The sessions ``attach`` looks in: this host's alone when they hold a pid's, or a rank's of ``--job``.

    What another node asks (``attach --pid N --job J``, :mod:`autodbg.transport`)
    is then answered without joining the job's store.
    """
    if args.by == "pid" or args.job:
        root = _runtime_dir()
        local = [r for r in registry.sessions(root) if not args.job or r["job"] == args.job]
        key = "pid" if args.by == "pid" else "rank"
        if any(r.get(key) == args.target for r in local):
            return local
    return _sessions(args)


def _node_elsewhere(record, args):
    """Return the job record of the node to reach ``record``'s session through, None for this node.

    A session is elsewhere when it runs on another host, or on this host under
    another runtime directory than this CLI's (two nodes of one job on one
    host, each with its own ``AUTODBG_DIR``): its socket is then reached by
    running ``autodbg attach`` on its node (:mod:`autodbg.transport`).
    """
    from autodbg import discovery, store

    socket = record.get("socket")
    mine = _runtime_dir()
    if registry.here(record) and (
        not isinstance(socket, str)
        or os.path.realpath(os.path.dirname(os.path.dirname(socket))) == os.path.realpath(mine)
    ):
        return None
    nodes = []
    try:
        for address in discovery.job_stores(args)[0]:
            nodes += [n for n in discovery.nodes(address) if n.get("job") == record.get("job")]
    except store.StoreError as error:
        print(f"autodbg: the job's nodes are not known ({error})", file=sys.stderr)
    node = discovery.node_of(record, nodes)
    if node is None and not registry.here(record):
        node = {"host": record["host"]}  # its node's record is gone: this Python, its default dir
    return node


def _node_of_rank(args):
    """Return the job record of the other node that runs rank ``args.target``, else None."""
    from autodbg import discovery, store

    if args.by == "pid":
        return None
    try:
        nodes = discovery.other_nodes(args)
    except (store.StoreError, discovery.DiscoveryError):
        return None
    return next((n for n in nodes if args.target in (n.get("ranks") or ())), None)


def _attach_through_transport(node, ask, commands, who):
    """Run ``autodbg <ask>`` (an ``attach``) on ``node`` with this terminal; return its exit status."""
    from autodbg import transport

    for command in commands or ():
        ask += ["-c", command]
    try:
        return transport.attach(node, ask)
    except transport.TransportError as error:
        raise CliError(f"{who}: {error}") from None


def _opened(record, poll=0.05):
    """Wait until the session of ``record``, still opening, waits for a client or has one.

    Blocks at most :data:`OPENING_WAIT` seconds, polling this host's records
    every ``poll`` seconds; says so in one line first.

    Returns:
        dict: the session's record, in state ``waiting`` or ``attached``.

    Raises:
        CliError: the session ended, the process exited, or it was still opening at the deadline.
    """
    import time

    who = _describe(record)
    root = _runtime_dir()
    print(
        f"autodbg: {who} is opening its session; waiting up to {OPENING_WAIT:g} s for it",
        file=sys.stderr,
    )
    deadline = time.monotonic() + OPENING_WAIT
    while True:
        now = next((r for r in registry.sessions(root) if r["pid"] == record["pid"]), None)
        if now is None:
            if not _alive(record["pid"]):
                raise CliError(f"{who} exited while opening its session")
            raise CliError(f"{who}'s session ended before it waited for a client; see its output")
        if now.get("state") != "opening":
            return now
        if time.monotonic() > deadline:
            raise CliError(
                f"{who} is still opening its session after {OPENING_WAIT:g} s; "
                "try again, or see where it is with `autodbg stack`"
            )
        time.sleep(poll)


def _running(args):
    """Find the running autodbg process that ``attach``'s target names, when it has no session.

    A rank is looked up among the processes that registered for stack dumps
    (every process of a torch job does, see :mod:`autodbg.stacks`); a pid
    needs only to be a process of this user that runs with ``AUTODBG`` on
    (whether autodbg's handler is installed there, :func:`_break_in` checks).

    Returns:
        dict | None: ``{"pid": ...}`` plus the stack registration when there is one.
    """
    from autodbg import stacks

    try:
        known = stacks.processes(registry.runtime_dir(config.load(warn=_warn).dir), args.job)
    except registry.RuntimeDirError:
        known = []
    if args.by != "pid":
        try:
            process = _resolve(
                [p for p in known if p.get("rank") is not None], args.target, "rank", args.job
            )
            return process if _breakable(process["pid"]) else None
        except CliError:
            if args.by == "rank":
                return None
    if not _breakable(args.target):
        return None
    return next((p for p in known if p["pid"] == args.target), {"pid": args.target})


def _breakable(pid):
    """Tell whether ``pid`` is a live process of this user that runs with autodbg on."""
    import psutil

    try:
        process = psutil.Process(pid)
        return process.uids().real == os.getuid() and config.enabled(process.environ())
    except psutil.Error:
        return False


def _break_in(pid, process):
    """Ask ``pid`` for a live session with its break signal; return its record once it waits.

    The signal goes only to a process that has a handler installed for it
    (``SigCgt``, :func:`autodbg.registry.catches`), and not to one that has a
    session record already (a session that began opening since the caller
    looked): its record is returned instead. Waits up to the target's
    ``AUTODBG_WAIT``; Ctrl-C withdraws the request. When the process has a
    stack file (``process["path"]``) and does not stop within a second, its
    stacks are shown: where its main thread is held.

    Raises:
        CliError: the target cannot be broken into, exited, or did not answer in time.
    """
    import time

    import psutil

    try:
        settings = config.load(psutil.Process(pid).environ(), warn=lambda line: None)
    except psutil.Error:
        raise CliError(f"pid {pid} is gone") from None
    if settings.break_signal is None or settings.mode == "off":
        raise CliError(
            f"pid {pid} runs with its break signal off (AUTODBG_BREAK_SIGNAL, AUTODBG_MODE); nothing to attach to"
        )
    try:
        root = registry.runtime_dir(settings.dir)
    except registry.RuntimeDirError as error:
        raise CliError(str(error)) from None
    for record in registry.sessions(root):
        if record["pid"] == pid:
            return record
    name = registry.signal_name(settings.break_signal)
    if not registry.catches(pid, settings.break_signal):
        raise CliError(
            f"pid {pid} has no handler for {name} (autodbg's break signal), which would end it: "
            "not sent. autodbg is not loaded there (not Python, `python -S`, a venv without "
            "autodbg) or the program reset the handler; run it with autodbg installed "
            "to attach live"
        )
    registry.remove(registry.break_cancel_path(root, pid))
    os.kill(pid, settings.break_signal)
    print(
        f"autodbg: asked pid {pid} to stop where it is; waiting for its session (Ctrl-C cancels)",
        file=sys.stderr,
    )
    started = time.monotonic()
    said = False
    try:
        while True:
            for record in registry.sessions(root):
                if record["pid"] == pid and record.get("state") != "opening":
                    return record
            if not _alive(pid):
                raise CliError(f"pid {pid} exited before its session opened")
            waited = time.monotonic() - started
            if waited > settings.wait:
                raise CliError(f"pid {pid} did not stop within {settings.wait:g} s (AUTODBG_WAIT)")
            if waited > 1 and not said:
                print(
                    f"autodbg: pid {pid} is not running Python code now (its main thread is in a C call, "
                    "a sleep or a lock); it stops as soon as it returns to Python",
                    file=sys.stderr,
                )
                if "path" in process:
                    from autodbg import stacks

                    print(
                        stacks.render(stacks.collect([process], 1.0), 1.0), end="", file=sys.stderr
                    )
                said = True
            time.sleep(0.1)
    except KeyboardInterrupt:
        with open(registry.break_cancel_path(root, pid), "w"):
            pass
        raise CliError(f"cancelled; pid {pid} goes on as before") from None


def _alive(pid):
    """Tell whether ``pid`` still runs: exists and is not a zombie its parent has yet to reap."""
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


# seconds a remote `autodbg stack` gets beyond --timeout (connecting, start-up)
REMOTE_MARGIN = 15.0


def cmd_stack(args):
    """Print where every thread of some processes (or of a whole job) is now, grouped.

    Without ``--local``, the job's other nodes (:func:`autodbg.discovery.other_nodes`)
    are asked at once, through :mod:`autodbg.transport`, for their own
    processes (``autodbg stack --all --local --json``); their answers are
    grouped with this host's. A node that cannot be reached is one line, and
    the exit status 1.
    """
    from autodbg import stacks

    if not args.targets and not args.all:
        print(
            "autodbg: name the processes (ranks or pids), or give --all for a whole job",
            file=sys.stderr,
        )
        return 2
    root = _runtime_dir()
    known = stacks.processes(root, args.job)
    missing = []
    if args.all:
        jobs = sorted(
            {p["job"] for p in known if p.get("rank") is not None} or {p["job"] for p in known}
        )
        nodes = [] if args.local or len(jobs) > 1 else _other_nodes(args, jobs[0] if jobs else None)
        if not jobs and nodes:
            jobs = sorted({n["job"] for n in nodes})
        if not jobs:
            raise CliError(
                "no process with stack dumps found (autodbg registers the ranks of torch.distributed jobs)"
            )
        if len(jobs) > 1:
            raise CliError(
                f"processes of {len(jobs)} jobs ({', '.join(jobs)}); pick one with --job"
            )
        job = jobs[0]
        targets = [p for p in known if p["job"] == job]
    else:
        targets = []
        for target in args.targets:
            try:
                found = _resolve(known, target, None, args.job)
            except CliError as error:
                if args.local:
                    raise
                missing.append((target, error))  # a rank of another node, perhaps
                continue
            if found not in targets:
                targets.append(found)
        job = args.job or (targets[0]["job"] if targets else None)
        nodes = _other_nodes(args, job) if missing else []
        if missing and not nodes:
            raise missing[0][1]
        missing = [target for target, _ in missing]
        job = job or nodes[0]["job"]
    nodes = [n for n in nodes if n.get("job") == job]
    if args.collectives:
        from autodbg import collectives

        collectives.request(targets)
    results = stacks.collect(targets, args.timeout, with_locals=args.locals)
    if args.collectives:
        collectives.gather(results, targets, args.timeout)
    failed = False
    if nodes:
        remote, failed = _remote_stacks(nodes, job, args)
        if not args.all:
            remote = [r for r in remote if r.get("rank") in missing]
            absent = [t for t in missing if t not in {r.get("rank") for r in remote}]
            if absent:
                failed = True
                print(
                    f"autodbg: no process of rank {', '.join(map(str, absent))} in job {job} "
                    "on any node",
                    file=sys.stderr,
                )
        results += remote
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        if args.collectives:
            print(collectives.verdict(results))
        print(stacks.render(results, args.timeout), end="")
    return 0 if all(r["answered"] for r in results) and not failed else 1


def _other_nodes(args, job):
    """Return the other nodes of ``job`` (None: this host's one job); none if its store is unreachable.

    An unreachable store is said in one line, and is an error only when ``--store`` named it.
    """
    import argparse

    from autodbg import discovery, store

    try:
        return discovery.other_nodes(argparse.Namespace(**dict(vars(args), job=job)))
    except store.StoreError as error:
        if args.store:
            raise CliError(str(error)) from None
        print(f"autodbg: {error}; this host's processes only", file=sys.stderr)
    except discovery.DiscoveryError as error:
        raise CliError(str(error)) from None
    return []


def _remote_stacks(nodes, job, args):
    """Ask ``nodes`` for their processes' stacks; return ``(results, whether a node failed)``.

    Blocks up to ``--timeout`` plus :data:`REMOTE_MARGIN` seconds. A node that
    fails is one line on stderr, naming it and why.
    """
    from autodbg import transport

    ask = ["stack", "--all", "--local", "--json", "--job", job, "--timeout", str(args.timeout)]
    if args.locals:
        ask.append("--locals")
    if args.collectives:
        ask.append("--collectives")
    answers = transport.run_on(nodes, ask, args.timeout + REMOTE_MARGIN)
    results, failed = [], False
    for node in nodes:
        answer = answers[node["host"]]
        why = None
        if isinstance(answer, transport.TransportError):
            why = str(answer)
        else:
            try:
                found = json.loads(answer.stdout) if answer.stdout.strip() else None
            except ValueError:
                found = None
            if isinstance(found, list):
                results += [r for r in found if isinstance(r, dict) and "answered" in r]
                continue
            lines = [line for line in answer.stderr.splitlines() if line.strip()]
            why = lines[-1].removeprefix("autodbg: ") if lines else f"status {answer.returncode}"
        failed = True
        print(f"autodbg: node {node['host']}: {why}", file=sys.stderr)
    return results, failed


def cmd_cast(args):
    """Run one read-only debugger command on many ranks and print the answers grouped."""
    from autodbg import cast

    try:
        return cast.cmd_cast(args, _runtime_dir())
    except cast.CastError as error:
        raise CliError(str(error)) from None


def _runtime_dir():
    """Return the checked runtime directory of the CLI's environment.

    Raises:
        CliError: it is unsafe or cannot be made (the message says which and what to do).
    """
    try:
        return registry.runtime_dir(config.load(warn=_warn).dir)
    except registry.RuntimeDirError as error:
        raise CliError(str(error)) from None


def _sessions(args):
    """This host's session records, and those published in the job's store (or the stores of this host's jobs)."""
    from autodbg import discovery, store

    root = _runtime_dir()
    records = registry.sessions(root)
    try:
        addresses, explicit = discovery.job_stores(args)
    except store.StoreError as error:
        raise CliError(str(error)) from None
    for address in addresses:
        records += _store_sessions(address, records, explicit)
    if getattr(args, "job", None):
        records = [r for r in records if r["job"] == args.job]
    return records


def _store_sessions(address, local, explicit):
    """Sessions published in the job's store at ``address`` that this machine's directory lacks.

    An unreachable store is an error when ``--store`` named it; when it only
    came from ``MASTER_ADDR``/``MASTER_PORT`` in the environment or from a job
    record (:mod:`autodbg.discovery`), the job may be over, and the local
    sessions are all there is.

    Anyone who reaches the store may write there, so a record counts only
    when it has the shape of one (a pid, a host, a job) and names a host that
    a node of the job registered (:func:`autodbg.discovery.nodes`): a forged
    one cannot send ``attach`` to a host outside the job.
    """
    from autodbg import discovery, store

    try:
        published = store.records(store.connect(address))
        hosts = {node["host"] for node in discovery.nodes(address)}
    except store.StoreError as error:
        if not explicit:
            return []
        raise CliError(str(error)) from None
    here = os.uname().nodename
    known = {(r["host"], r["pid"]) for r in local}
    return [
        r
        for r in published
        if _well_formed(r)
        and r["host"] in hosts
        and (r["host"], r["pid"]) not in known
        and (r["host"] != here or registry.process_started(r["pid"]))
    ]


def _well_formed(record):
    """Tell whether a record read from a store has the fields and types the CLI relies on."""
    # The same shape as this host's records (registry.TYPES: a field of the wrong type
    # fails `ls` further on), and a host, which only a record of this host may lack.
    return registry.shaped(record, registry.TYPES) and isinstance(record.get("host"), str)


def _resolve(records, target, by, job):
    scope = f" in job {job}" if job else ""
    if by in (None, "rank"):
        ranked = [r for r in records if r.get("rank") == target]
        jobs = sorted({r["job"] for r in ranked})
        if len(jobs) > 1 and (by == "rank" or not any(r["pid"] == target for r in records)):
            raise CliError(
                f"rank {target} has sessions in {len(jobs)} jobs ({', '.join(jobs)}); pick one with --job"
            )
        if len(ranked) > 1 and len(jobs) == 1:
            pids = ", ".join(str(r["pid"]) for r in ranked)
            raise CliError(
                f"rank {target} has {len(ranked)} sessions (pids {pids}); pick one with --pid"
            )
        if len(jobs) == 1:
            return ranked[0]
        if by == "rank":
            raise CliError(
                f"no open session for rank {target}{scope}; `autodbg ls` lists the open ones"
            )
    for record in records:
        if record["pid"] == target:
            return record
    if by == "pid":
        raise CliError(f"no open session for pid {target}{scope}; `autodbg ls` lists the open ones")
    raise CliError(
        f"no open session for rank or pid {target}{scope}; `autodbg ls` lists the open ones"
    )


def _describe(record):
    names = ([] if record.get("rank") is None else [f"rank {record['rank']}"]) + (
        [record["role"]] if record.get("role") else []
    )
    if not names:
        return f"pid {record['pid']}"
    return f"{' / '.join(names)} (pid {record['pid']})"


def cmd_show(args):
    """Print a crash record: the newest, or the newest of a rank (else a pid); ``--list`` lists them."""
    from autodbg import crashes

    root = _runtime_dir()
    found = crashes.records(root)
    scope = f" in job {args.job}" if args.job else ""
    if args.job:
        found = [r for r in found if r.get("job") == args.job]
    if args.list:
        print(
            json.dumps(found, indent=2)
            if args.json
            else crashes.format_list(found)
            if found
            else "no crash records"
        )
        return 0
    if args.target is not None:
        by_rank = [r for r in found if r.get("rank") == args.target] if args.by != "pid" else []
        by_pid = [r for r in found if r["pid"] == args.target] if args.by != "rank" else []
        found = by_rank or by_pid
        if not found:
            what = args.by or "rank or pid"
            raise CliError(
                f"no crash record for {what} {args.target}{scope}; `autodbg show --list` lists them"
            )
    elif not found:
        raise CliError(f"no crash records{scope} in {os.path.join(root, crashes.FOLDER)}")
    print(json.dumps(found[0], indent=2) if args.json else crashes.format_text(found[0]))
    return 0


def _warn(line):
    print(f"autodbg: {line}", file=sys.stderr)


def _rank_or_pid(verb):
    """Add ``--rank`` and ``--pid``, which say how to read a verb's ``TARGET`` (``args.by``)."""
    force = verb.add_mutually_exclusive_group()
    force.add_argument(
        "--rank", dest="by", action="store_const", const="rank", help="TARGET is a rank"
    )
    force.add_argument(
        "--pid", dest="by", action="store_const", const="pid", help="TARGET is a pid"
    )


class JobView:
    """What ``autodbg web`` asks the CLI about the job, as ``ls`` and ``attach`` find it.

    Handed to :mod:`autodbg.dashboard`, which so needs no import of this module.

    Args:
        args (argparse.Namespace): the verb's ``job`` and ``store``.
    """

    Error = CliError

    def __init__(self, args):
        self._args = args

    def sessions(self):
        """The job's session records, this host's and the store's (as ``autodbg ls``)."""
        return _sessions(self._args)

    def runtime_dir(self):
        """The checked runtime directory (CliError when unsafe)."""
        return _runtime_dir()

    def node_elsewhere(self, record):
        """The node to reach ``record``'s session through, None for this one (as ``attach``)."""
        return _node_elsewhere(record, self._args)


def cmd_web(args):
    """Serve one local page for the whole job until Ctrl-C (:mod:`autodbg.dashboard`)."""
    from autodbg import dashboard

    return dashboard.main(args, JobView(args))


def build_parser():
    """Return the argument parser; the README's verb table is checked against it."""
    parser = argparse.ArgumentParser(
        prog="autodbg",
        description="Reach the debugger sessions that AUTODBG=1 opens in your processes.",
    )
    parser.add_argument("--version", action="version", version=f"autodbg {__version__}")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    ls = verbs.add_parser("ls", help="list open sessions, newest job first")
    ls.add_argument("--json", action="store_true", help="print a JSON array of session records")
    ls.add_argument("--job", help="only this job's sessions")
    ls.add_argument(
        "--store", metavar="HOST:PORT", help="also list the sessions published in this c10d store"
    )
    ls.set_defaults(func=cmd_ls)

    attach = verbs.add_parser("attach", help="attach this terminal to a session (by rank or pid)")
    attach.add_argument(
        "target", type=int, metavar="PID|RANK", help="a rank of exactly one live job, else a pid"
    )
    _rank_or_pid(attach)
    attach.add_argument("--job", help="the job to look in (see `autodbg ls`)")
    attach.add_argument(
        "--store", metavar="HOST:PORT", help="also look in this c10d store (other nodes' sessions)"
    )
    attach.add_argument(
        "-c",
        dest="commands",
        action="append",
        metavar="COMMAND",
        help="run this debugger command, print its output, detach (repeatable)",
    )
    attach.set_defaults(func=cmd_attach, by=None)

    stack = verbs.add_parser(
        "stack", help="print where every thread of some processes, or a whole job, is now"
    )
    stack.add_argument(
        "targets",
        type=int,
        nargs="*",
        metavar="PID|RANK",
        help="ranks of exactly one live job, else pids",
    )
    stack.add_argument(
        "--all", action="store_true", help="every process of the job (ranks and their children)"
    )
    stack.add_argument("--job", help="the job to look in")
    stack.add_argument(
        "--store",
        metavar="HOST:PORT",
        help="the job's c10d store (or rendezvous endpoint), to find its other nodes",
    )
    stack.add_argument(
        "--local", action="store_true", help="only this host's processes (no other node is asked)"
    )
    stack.add_argument(
        "--json", action="store_true", help="print the raw per-process data as a JSON array"
    )
    stack.add_argument(
        "--locals",
        action="store_true",
        help="each frame's locals as short reprs (needs a Python thread that can run)",
    )
    stack.add_argument(
        "--collectives",
        action="store_true",
        help="first, the Flight Recorder's verdict on the ranks' collectives (torch's analysis)",
    )
    stack.add_argument(
        "--timeout",
        type=float,
        default=1.5,
        metavar="SECONDS",
        help="bound on the whole collection (default 1.5)",
    )
    stack.set_defaults(func=cmd_stack)

    cast = verbs.add_parser(
        "cast", help="run one read-only debugger command on many ranks, answers grouped"
    )
    cast.add_argument("ranks", metavar="RANKS", help="`all`, or ranks such as 0-3,7")
    cast.add_argument("command", metavar="COMMAND", help="p EXPR, pp EXPR, w, a, or an expression")
    cast.add_argument("--job", help="the job to look in")
    cast.add_argument(
        "--store", metavar="HOST:PORT", help="the job's c10d store (from a node outside the job)"
    )
    cast.add_argument(
        "--frame",
        metavar="innermost|FUNCTION",
        help="the frame to evaluate in (default: a session's current frame, else the "
        "innermost frame of the program's own code in the main thread)",
    )
    cast.add_argument("--json", action="store_true", help="print one JSON object per rank")
    cast.add_argument(
        "--timeout",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="bound on the whole cast (default 5)",
    )
    cast.add_argument("--local", action="store_true", help="only this host's ranks")
    cast.set_defaults(func=cmd_cast)

    show = verbs.add_parser("show", help="print a crash record, kept after the process is gone")
    show.add_argument(
        "target",
        type=int,
        nargs="?",
        metavar="PID|RANK",
        help="the newest crash of this rank, else of this pid",
    )
    _rank_or_pid(show)
    show.add_argument("--job", help="only this job's crash records")
    show.add_argument("--list", action="store_true", help="list the crash records, newest first")
    show.add_argument(
        "--json", action="store_true", help="print the record (with --list: all of them) as JSON"
    )
    show.set_defaults(func=cmd_show, by=None)

    web = verbs.add_parser(
        "web", help="serve one page for the whole job: sessions, consoles, stacks, cast"
    )
    web.add_argument("--job", help="only this job's sessions and processes")
    web.add_argument(
        "--store", metavar="HOST:PORT", help="also list the sessions published in this c10d store"
    )
    web.add_argument(
        "--port", type=int, default=0, help="the port to listen on (default: the kernel picks one)"
    )
    web.set_defaults(func=cmd_web)
    return parser


def main(argv=None):
    """Run the ``autodbg`` command line.

    Args:
        argv (list[str] | None): arguments without the program name; None for ``sys.argv[1:]``.

    Returns:
        int: the exit status.
    """
    # With AUTODBG=1 in the shell, autodbg.pth hooked this process too: the
    # CLI's own failures are tracebacks, not debugger sessions.
    sys.excepthook = sys.__excepthook__
    # What the CLI prints comes from records, which anyone's edit may have filled with
    # text the terminal's encoding cannot carry (a lone surrogate): escaped, not a traceback.
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="backslashreplace")
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except CliError as error:
        print(f"autodbg: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
