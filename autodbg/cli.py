"""The ``autodbg`` command line: one function per verb.

Exit status: 0 on success, 1 when the verb fails at run time (no such
session, busy session, unsafe runtime directory), 2 on a usage error
(argparse's convention).
"""

import argparse
import json
import os
import sys

from autodbg import __version__, config, identity, registry


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
        if state == "attached" and not r.get("socket"):
            state += " (terminal)"
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

    A process with a session record in any state is in a session: it is never
    sent the break signal. One whose session is still ``opening`` (writing its
    crash record, opening its socket) is waited for, up to :data:`OPENING_WAIT`
    seconds.
    """
    from autodbg import client

    try:
        record = _resolve(_sessions(args), args.target, args.by, args.job)
    except CliError:
        process = _running(args)
        if process is None:
            raise
        record = _break_in(process["pid"], process)
    if record.get("state") == "opening":
        record = _opened(record)
    who = _describe(record)
    if not record.get("socket"):
        raise CliError(
            f"{who} is in a debugger on its own terminal; it cannot be attached from here"
        )
    if record["state"] == "attached":
        raise CliError(f"{who} is busy: another client is attached; try again when it detaches")
    try:
        client.attach(record, args.commands)
    except client.AttachError as error:
        raise CliError(f"{who}: {error}") from None
    return 0


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


def cmd_stack(args):
    """Print where every thread of some processes (or of a whole job) is now, grouped."""
    from autodbg import stacks

    if not args.targets and not args.all:
        print(
            "autodbg: name the processes (ranks or pids), or give --all for a whole job",
            file=sys.stderr,
        )
        return 2
    root = _runtime_dir()
    known = stacks.processes(root, args.job)
    if args.all:
        jobs = sorted(
            {p["job"] for p in known if p.get("rank") is not None} or {p["job"] for p in known}
        )
        if not jobs:
            raise CliError(
                "no process with stack dumps found (autodbg registers the ranks of torch.distributed jobs)"
            )
        if len(jobs) > 1:
            raise CliError(
                f"processes of {len(jobs)} jobs ({', '.join(jobs)}); pick one with --job"
            )
        targets = [p for p in known if p["job"] == jobs[0]]
    else:
        targets = []
        for target in args.targets:
            found = _resolve(known, target, None, args.job)
            if found not in targets:
                targets.append(found)
    results = stacks.collect(targets, args.timeout, with_locals=args.locals)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print(stacks.render(results, args.timeout), end="")
    return 0 if all(r["answered"] for r in results) else 1


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
    root = _runtime_dir()
    records = registry.sessions(root)
    if args.store or identity.store_address():
        records += _store_sessions(
            args.store or identity.store_address(), records, explicit=bool(args.store)
        )
    if getattr(args, "job", None):
        records = [r for r in records if r["job"] == args.job]
    return records


def _store_sessions(address, local, explicit):
    """Sessions published in the job's store at ``address`` that this machine's directory lacks.

    An unreachable store is an error when ``--store`` named it; when it only
    came from ``MASTER_ADDR``/``MASTER_PORT`` in the environment, the job may
    be over, and the local sessions are all there is.
    """
    from autodbg import store

    try:
        published = store.records(store.connect(address))
    except store.StoreError as error:
        if not explicit:
            return []
        raise CliError(str(error)) from None
    here = os.uname().nodename
    known = {(r["host"], r["pid"]) for r in local}
    return [
        r
        for r in published
        if (r["host"], r["pid"]) not in known
        and (r["host"] != here or registry.process_started(r["pid"]))
    ]


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
        "--json", action="store_true", help="print the raw per-process data as a JSON array"
    )
    stack.add_argument(
        "--locals",
        action="store_true",
        help="each frame's locals as short reprs (needs a Python thread that can run)",
    )
    stack.add_argument(
        "--timeout",
        type=float,
        default=1.5,
        metavar="SECONDS",
        help="bound on the whole collection (default 1.5)",
    )
    stack.set_defaults(func=cmd_stack)

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
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except CliError as error:
        print(f"autodbg: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
