"""``autodbg cast RANKS COMMAND``: one read-only debugger command on many ranks, answers grouped.

The request, without a signal
    Every process of a torch job runs autodbg's stack thread
    (:func:`autodbg.stacks._serve`), which looks ten times a second at its
    stack file. It also looks (one ``stat``) for ``<pid>.stack.cast`` beside
    it: the CLI writes that request (JSON ``{id, command, frame, limit,
    until}``, 0600, to a temporary name then renamed). The thread takes it
    (removes it), evaluates the command (:func:`autodbg.readonly.answer`), and writes
    ``<pid>.stack.<id>.answer`` the same way. No signal: the stack signal
    would print a dump on the job's stderr, the break signal would stop the
    rank. A rank blocked in C (a gloo or NCCL collective releases the GIL)
    answers, since the thread runs; a rank looping in Python answers too
    (the interpreter hands the GIL over every 5 ms).

Where the command is evaluated
    A rank in a debugger session: the session's current frame (the one
    ``up``/``down`` chose; before any client came, the frame the session
    opened at). Otherwise the main thread's stack, at the frame a session
    would open at (:func:`autodbg.frames.program_frame`); ``--frame
    innermost`` or ``--frame FUNCTION`` (the innermost frame of that name)
    choose another.

Read-only, bounded
    The command is checked, and compiled to run read-only, by
    :mod:`autodbg.readonly`, in the CLI before it is sent and again in the
    rank. It runs against a copy of the frame's locals over a copy of its
    globals (``f_locals`` is never written; in a session, pdb's own snapshot
    of them is read, so that a value the user set there is seen and kept),
    on a thread of its own (``autodbg-cast``) that the stack thread waits for
    at most the request's ``limit`` seconds: a ``repr`` that blocks on a lock
    the main thread holds is reported as such. The answer is cut at
    :data:`autodbg.readonly.MAX_ANSWER` characters.

The CLI's side
    :func:`cmd_cast` asks this host's ranks (:func:`autodbg.stacks.processes`)
    all at once and polls for their answers until one deadline; the ranks of
    other nodes are asked through :func:`autodbg.transport.run_on` (``autodbg
    cast ... --local --json`` there), in parallel. A rank that cannot answer
    is named with why; whatever happens, the request and answer files are
    removed.
"""

import json
import os
import sys
import time

from autodbg.readonly import Refused, compile_command

POLL = 0.005  # seconds between the CLI's looks at the answer files
LIMIT_SHARE = 0.8  # of --timeout: the rank's bound on evaluating, so that its answer still comes
MAX_RANKS = 1_000_000  # the longest range RANKS may name
REMOTE_SLACK = 5.0  # seconds on top of --timeout for reaching another node (an ssh handshake)

# What `cast --json` prints for each rank.
FIELDS = (
    "rank", "pid", "host", "world_size", "answered", "answer", "raised", "error", "frame", "seconds",
)  # fmt: skip


# -- in the CLI ------------------------------------------------------------------------------


def parse_ranks(text):
    """Parse ``RANKS``: ``all`` (None), or ranks and ranges such as ``0-3,7``.

    Raises:
        ValueError: with the message for the user.
    """
    if text == "all":
        return None
    ranks = set()
    try:
        for part in text.split(","):
            first, dash, last = part.partition("-")
            low, high = int(first), int(last) if dash else int(first)
            if low < 0 or high < low or high - low > MAX_RANKS:
                raise ValueError
            ranks.update(range(low, high + 1))
    except ValueError:
        raise ValueError(f"RANKS is `all` or ranks such as 0-3,7, not {text!r}") from None
    return ranks


def ask(targets, command, frame, timeout):
    """Ask every target at once for the answer to ``command``; wait at most ``timeout`` seconds.

    Args:
        targets (list[dict]): stack-file headers from :func:`autodbg.stacks.processes`.
        command (str): the cast command, already checked (:func:`compile_command`).
        frame (str | None): ``--frame``.
        timeout (float): seconds for all of them together.

    Returns:
        list[dict]: one per target: ``rank``, ``pid``, ``host``, ``world_size``,
        ``answered``, ``answer``, ``raised``, ``error``, ``frame`` (``file``,
        ``line``, ``function``), ``seconds``.
    """
    from autodbg import registry

    ident = os.urandom(8).hex()
    start = time.monotonic()
    until = time.time() + timeout
    request = json.dumps(
        {
            "id": ident,
            "command": command,
            "frame": frame,
            "limit": timeout * LIMIT_SHARE,
            "until": until,
        }
    )
    results, pending = [], {}
    for target in targets:
        result = dict(dict.fromkeys(FIELDS), answered=False, raised=False)
        result.update({key: target.get(key) for key in ("rank", "pid", "host", "world_size")})
        results.append(result)
        base = target["path"]
        try:
            tmp = f"{base}.cast.{os.getpid()}.tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(request)
            os.replace(tmp, base + ".cast")
        except OSError as error:
            result["error"] = f"cannot write the request: {error.strerror}"
            continue
        pending[base] = result
    while pending:
        last = time.time() > until
        for base, result in list(pending.items()):
            got = _read_answer(f"{base}.{ident}.answer", ident)
            if got is not None:
                result.update(got, answered=got["error"] is None, seconds=time.monotonic() - start)
                del pending[base]
        if last or not pending:
            break
        time.sleep(POLL)
    for base, result in pending.items():
        taken = not os.path.exists(base + ".cast")
        registry.remove(base + ".cast", f"{base}.{ident}.answer")
        if registry.process_started(result["pid"]) is None:
            result["error"] = "exited"
        elif taken:
            result["error"] = f"took the request but did not answer within {timeout:g} s"
        else:
            result["error"] = (
                f"did not take the request within {timeout:g} s: autodbg's stack thread does not "
                "run there (it ended, or the process holds the GIL in C code)"
            )
    return results


def _read_answer(path, ident):
    from autodbg import registry

    try:
        with open(path) as source:
            got = json.load(source)
    except (OSError, ValueError):
        return None
    registry.remove(path)
    if not isinstance(got, dict) or got.get("id") != ident:
        return None
    return {key: got.get(key) for key in ("answer", "raised", "error", "frame")}


class CastError(Exception):
    """``cast`` cannot run; the message is one line for the user (the CLI exits 1)."""


def cmd_cast(args, root):
    """Run ``autodbg cast``: ask the ranks, print their answers grouped (or as JSON).

    Blocks up to ``args.timeout`` seconds, plus :data:`REMOTE_SLACK` when other
    nodes are asked.

    Args:
        args (argparse.Namespace): the verb's arguments.
        root (str): the checked runtime directory.

    Returns:
        int: 0 when every rank asked answered, 1 otherwise, 2 on a usage error.

    Raises:
        CastError: no rank found, processes of several jobs and no ``--job``,
            or the store that ``--store`` names cannot be reached.
    """
    import threading

    from autodbg import stacks

    try:
        compile_command(args.command)
        wanted = parse_ranks(args.ranks)
        if args.timeout <= 0:
            raise ValueError("--timeout is a number of seconds above 0")
    except (Refused, ValueError) as error:
        print(f"autodbg: cast: {error}", file=sys.stderr)
        return 2
    known = [p for p in stacks.processes(root, args.job) if p.get("rank") is not None]
    jobs = sorted({p["job"] for p in known})
    if len(jobs) > 1:
        raise CastError(f"ranks of {len(jobs)} jobs ({', '.join(jobs)}); pick one with --job")
    job = args.job or (jobs[0] if jobs else None)
    remote = {}
    fan_out = None
    if not args.local:
        from autodbg import discovery, store

        try:
            nodes = discovery.other_nodes(args)
        except (store.StoreError, discovery.DiscoveryError) as error:
            if args.store:
                raise CastError(str(error)) from None
            print(f"autodbg: only this host's ranks are asked: {error}", file=sys.stderr)
            nodes = []
        if nodes:
            argv = ["cast", "--local", "--json", "--timeout", str(args.timeout)]
            argv += ["--job", job] if job else []
            argv += ["--frame", args.frame] if args.frame else []
            argv += ["--", args.ranks, args.command]  # an expression may start with a dash

            def run():
                from autodbg import transport

                remote.update(transport.run_on(nodes, argv, args.timeout + REMOTE_SLACK))

            fan_out = threading.Thread(target=run, name="autodbg-cast-fan-out", daemon=True)
            fan_out.start()
    targets = [p for p in known if wanted is None or p["rank"] in wanted]
    results = ask(targets, args.command, args.frame, args.timeout)
    if fan_out is not None:
        fan_out.join()
        results += _remote_results(remote)
    if not results and not args.json:
        raise CastError(
            "no rank of a torch job found (autodbg registers the ranks of torch.distributed jobs)"
            + (f" in job {job}" if job else "")
        )
    if not args.local:  # a node asked for its own ranks leaves the others to the one that asked
        results += _missing(results, wanted)
    results.sort(
        key=lambda r: (r["rank"] is None, r["rank"] or 0, r.get("host") or "", r["pid"] or 0)
    )
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print(render(results), end="")
    return 0 if results and all(r["answered"] for r in results) else 1


def _remote_results(remote):
    from autodbg import transport

    results = []
    for host, outcome in remote.items():
        failure = None
        if isinstance(outcome, transport.TransportError):
            failure = str(outcome)
        else:
            try:
                got = json.loads(outcome.stdout)
                results += [
                    {field: r.get(field) for field in FIELDS} for r in got if isinstance(r, dict)
                ]
                continue
            except (ValueError, TypeError):
                lines = (outcome.stderr or "").strip().splitlines()
                failure = lines[-1] if lines else f"exit status {outcome.returncode}"
        results.append(
            dict(dict.fromkeys(FIELDS), host=host, answered=False, raised=False, error=failure)
        )
    return results


def _missing(results, wanted):
    # Ranks asked for (or, for `all`, below the world size) that no node listed.
    sizes = {r["world_size"] for r in results if r.get("world_size") is not None}
    expected = wanted if wanted is not None else set(range(max(sizes))) if sizes else set()
    found = {r["rank"] for r in results}
    why = "no process of the job has this rank on the nodes reached"
    return [
        dict(dict.fromkeys(FIELDS), rank=rank, answered=False, raised=False, error=why)
        for rank in sorted(expected - found)
    ]


def _label(members):
    from autodbg import stacks

    if all(m["pid"] is not None for m in members):
        return stacks.who(members)
    ranks = [m["rank"] for m in members if m["rank"] is not None]
    if ranks:
        return f"rank{'s' if len(ranks) > 1 else ''} {','.join(str(rank) for rank in ranks)}"
    return ", ".join(f"host {m['host']}" for m in members)


def render(results):
    """Return the text ``autodbg cast`` prints: identical answers merged, odd ones out first.

    A group's line names its ranks (:func:`autodbg.stacks.who`) and, when they
    share it, the function of the frame that answered; a one-line answer
    follows on the same line, a longer one below, indented. Ranks that did not
    answer come last, grouped by why.
    """
    answered, silent = {}, {}
    for result in results:
        if result["answered"]:
            answered.setdefault(result["answer"], []).append(result)
        else:
            silent.setdefault(result["error"], []).append(result)

    def order(group):
        return (len(group), min((m["rank"] is None, m["rank"] or 0) for m in group))

    out = []
    for text, members in sorted(answered.items(), key=lambda item: order(item[1])):
        functions = {(m["frame"] or {}).get("function") for m in members}
        where = f" in {functions.pop()}" if len(functions) == 1 and None not in functions else ""
        text = text or ""
        if "\n" in text:
            out.append(f"{_label(members)}{where}:")
            out.extend(f"    {line}" for line in text.splitlines())
        else:
            out.append(f"{_label(members)}{where}: {text}".rstrip())
    for why, members in sorted(silent.items(), key=lambda item: order(item[1])):
        out.append(f"{_label(members)}: no answer: {why}")
    return "".join(line + "\n" for line in out)
