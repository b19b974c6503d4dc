"""The Flight Recorder in hang reports: each rank's record of its collectives, and torch's verdict on them.

torch's Flight Recorder keeps, in every process, a ring buffer of the
collectives it issued (operation, process group, sequence number, sizes,
dtypes, the Python stack of the call) when ``TORCH_FR_BUFFER_SIZE`` is above
0 at the time a process group is made. Under ``AUTODBG_HANG``,
:func:`enable` sets it to :data:`BUFFER` in each process that imports
``torch.distributed`` (:mod:`autodbg.torch_hooks` calls it right after the
import, before the program can make a group), unless the program's
environment already says. Not by default: ``benchmarks/flight_recorder.py``
could not show the cost per collective to stay under 2 % on the
development VM (its 95 % interval spans the goal).

In the rank
    The CLI or the hang watchdog leaves ``<pid>.stack.fr-want`` beside the
    rank's stack file (:func:`request`) before it sends the stack signal; the
    stack-dump thread (:mod:`autodbg.stacks`), seeing a new dump and the
    request, calls :func:`answer`, which writes ``<pid>.stack.fr`` (JSON):
    torch's record (``torch._C._distributed_c10d._dump_fr_trace()``, a pickle
    made by this very process, loaded here) with a ``pg_config`` made from
    torch's own table of groups (``distributed_c10d._world``): gloo's dump
    leaves the names and ranks of its groups empty, and the analysis needs
    them. JSON, not the pickle, so that the collector never unpickles a file.

In the collector (the CLI, or the rank whose watchdog noticed first)
    :func:`gather` waits, bounded, for the answers; :func:`verdict` runs
    torch's analysis (``torch.distributed.flight_recorder.components.builder
    .build_db``, as ``torch.distributed.flight_recorder.fr_trace`` does, with
    ``--allow-incomplete-ranks``) and says, in a few lines, the first
    collective that did not match across its group: which one, the ranks that
    entered it, those missing and where they are now (from their stacks),
    and the mismatched sizes, dtypes or operations. torch is imported there
    only when a rank answered with a record. An error in the analysis is one
    ``flight recorder: ...`` line of the report, never a lost report.
"""

import json
import os
import sys
import time

from autodbg import registry
from autodbg.frames import is_program

BUFFER = "2000"  # entries of each rank's ring buffer, when autodbg sets TORCH_FR_BUFFER_SIZE
WANT = ".fr-want"  # suffix of the request beside a stack file
ANSWER = ".fr"  # suffix of the answer
LIMIT = 256 * 2**20  # bytes: the largest answer the collector reads
POLL = 0.005  # seconds between the collector's looks at the answers


def enable():
    """Turn torch's Flight Recorder on for this process under ``AUTODBG_HANG``, unless the environment says.

    Called right after ``import torch.distributed``: torch reads
    ``TORCH_FR_BUFFER_SIZE`` when the first process group is made. The
    variable stays in the environment, so the process's children get it too.
    """
    from autodbg import config

    if config.current().hang is not None:
        os.environ.setdefault("TORCH_FR_BUFFER_SIZE", BUFFER)


# -- in the rank ----------------------------------------------------------------------------


def answer(stack_file):
    """Answer a request beside ``stack_file``: write this rank's record to ``<stack_file>.fr``.

    Runs on the stack-dump thread. A process that has no initialized default
    process group (torchrun's agent, a rank still in ``init_process_group``)
    answers with an ``error`` instead, so that the collector need not wait;
    so does one whose record cannot be taken or written as JSON.

    Raises:
        OSError: the answer cannot be written.
    """
    registry.remove(stack_file + WANT)
    try:
        registry.write(stack_file + ANSWER, dump())
    except Exception as error:  # torch's dump, or a value of it that JSON cannot hold
        registry.write(stack_file + ANSWER, {"error": f"{type(error).__name__}: {error}"})


def dump():
    """Return this rank's Flight Recorder record as a JSON-ready dict.

    Returns:
        dict: torch's dump (``version``, ``entries``, ...) with ``pg_config``
        replaced by torch's table of groups (``{name: {"name", "desc", "ranks"}}``),
        plus ``rank`` (global) and ``buffer`` (``TORCH_FR_BUFFER_SIZE``);
        or ``{"error": str}`` when there is nothing to dump.
    """
    distributed = sys.modules.get("torch.distributed")
    if distributed is None or not distributed.is_available() or not distributed.is_initialized():
        return {"error": "torch.distributed is not initialized in this process"}
    import pickle

    import torch

    record = pickle.loads(torch._C._distributed_c10d._dump_fr_trace())  # made by this process
    c10d = distributed.distributed_c10d
    groups = {}
    for group, name in list(c10d._world.pg_names.items()):
        ranks = sorted(c10d._world.pg_group_ranks.get(group, {}))
        groups[name] = {"name": name, "desc": group.group_desc, "ranks": str(ranks)}
    record["pg_config"] = groups
    record["rank"] = distributed.get_rank()
    record["buffer"] = os.environ.get("TORCH_FR_BUFFER_SIZE")
    return record


# -- in the collector -----------------------------------------------------------------------


def request(targets):
    """Leave a request beside each target's stack file; the stack signal that follows makes it answer.

    Forked children (DataLoader workers) are not asked: their record is a copy of their parent's.

    Args:
        targets (list[dict]): stack file headers (:func:`autodbg.stacks.processes`), with ``path``.
    """
    for target in targets:
        if target.get("parent_pid") is None:
            registry.remove(target["path"] + ANSWER)
            with open(target["path"] + WANT, "w"):
                pass


def gather(results, targets, timeout):
    """Wait for the requested answers and put each in its result as ``flight_recorder``.

    Blocks until every asked process that was signalled (no ``error`` in its
    result) has answered, or ``timeout`` seconds. Removes the requests and
    the answers it read.

    Args:
        results (list[dict]): from :func:`autodbg.stacks.collect`, in the order of ``targets``;
            changed in place.
        targets (list[dict]): the headers given to :func:`request`.
        timeout (float): seconds.
    """
    pending = {
        target["path"]: result
        for target, result in zip(targets, results)
        if target.get("parent_pid") is None and "error" not in result
    }
    deadline = time.monotonic() + timeout
    while pending:
        for path, result in list(pending.items()):
            if os.path.exists(path + ANSWER):
                try:
                    result["flight_recorder"] = json.loads(registry.read(path + ANSWER, LIMIT))
                except (OSError, ValueError) as error:
                    result["flight_recorder"] = {"error": f"unreadable answer: {error}"}
                del pending[path]
        if not pending or time.monotonic() > deadline:
            break
        time.sleep(POLL)
    for target in targets:
        registry.remove(target["path"] + WANT, target["path"] + ANSWER)


def verdict(results):
    """Return torch's verdict on the records in ``results``: a few lines, or one saying why there is none.

    Never raises: an error in torch's analysis is the line ``flight recorder: <error>``.

    Args:
        results (list[dict]): from :func:`autodbg.stacks.collect`, with ``flight_recorder``
            from :func:`gather` (and ``threads``, for where the missing ranks are).

    Returns:
        str: lines ending with a newline.
    """
    records = {}
    for result in results:
        record = result.get("flight_recorder")
        if isinstance(record, dict) and "entries" in record and isinstance(record.get("rank"), int):
            records.setdefault(record["rank"], record)
    if not records:
        why = next(
            (
                r["flight_recorder"]["error"]
                for r in results
                if "error" in r.get("flight_recorder", {})
            ),
            "no rank answered",
        )
        return f"flight recorder: no record ({why})\n"
    if not any(record["entries"] for record in records.values()):
        buffers = sorted({str(record.get("buffer")) for record in records.values()})
        return (
            "flight recorder: no collective recorded (TORCH_FR_BUFFER_SIZE in the ranks: "
            f"{', '.join(buffers)}; autodbg sets it under AUTODBG_HANG)\n"
        )
    try:
        collectives = _analyse(records)
    except Exception as error:  # torch's analysis asserts on what it does not expect
        return f"flight recorder: torch's analysis failed: {type(error).__name__}: {error}\n"
    return _describe(collectives, results, sorted(records))


def _analyse(records):
    """Run torch's analysis of the records (rank -> dump); return its list of collectives."""
    import logging

    # Its logger prints each finding to stderr through a handler of its own:
    # in a rank, that is the job's log. Quiet while it runs.
    logger = logging.getLogger("Flight Recorder")
    disabled, logger.disabled = logger.disabled, True
    try:
        from torch.distributed.flight_recorder.components.builder import build_db
        from torch.distributed.flight_recorder.components.config_manager import JobConfig

        details = {
            f"rank{rank}": {
                "host_name": f"host_rank{rank}",
                "rank": rank,
                "entries": record["entries"],
                "version": record["version"],
                "pg_config": record["pg_config"],
            }
            for rank, record in records.items()
        }
        args = JobConfig().parse_args(["--allow-incomplete-ranks"])
        version = str(next(iter(records.values()))["version"])
        return build_db(details, args, version).collectives
    finally:
        logger.disabled = disabled


def _describe(collectives, results, dumped):
    if not collectives:
        return "flight recorder: no collective to match across ranks\n"
    bad = next((c for c in collectives if not c.pass_check or c.missing_ranks), None)
    if bad is None:
        last = collectives[-1]
        return (
            f"flight recorder: every recorded collective matched on all ranks of its group "
            f"(the last: {_name(last)} #{last.collective_seq_id} of process group "
            f"{last.pg_desc}); the hang is not a mismatch of collectives\n"
        )
    expected = sorted(bad.expected_ranks)
    missing = sorted(bad.missing_ranks or ())
    odd = dict(sorted((bad.mismatch_collectives or {}).items()))
    entered = [r for r in expected if r not in missing and r not in odd]
    lines = [
        f"flight recorder: {_name(bad)} #{bad.collective_seq_id} of process group "
        f"{bad.pg_desc} (ranks {_ranks(expected)}): "
        + (
            f"rank{'s' if len(missing) > 1 else ''} {_ranks(missing)} never entered it"
            if missing
            else f"mismatched on {_who(list(odd))}"
            if odd
            else "torch's analysis found it incomplete"
        ),
        f"  entered: {_who(entered)}{_shape(bad)}{_called(bad)}",
    ]
    where = _where(results)
    for rank in missing:
        lines.append(f"  missing: rank {rank}, now {where.get(rank, 'not known')}")
    for rank, other in odd.items():
        what = f"{_name(other)} #{other.collective_seq_id}{_shape(other)}{_called(other)}"
        lines.append(f"  mismatch: rank {rank} called {what}: {other.type_of_mismatch}")
    absent = [r for r in expected if r not in dumped]
    if absent:
        lines.append(f"  no record from rank{'s' if len(absent) > 1 else ''} {_ranks(absent)}")
    return "\n".join(lines) + "\n"


def _name(collective):
    # "gloo:all_reduce" -> "all_reduce"
    return collective.collective_name.partition(":")[2] or collective.collective_name


def _ranks(ranks):
    return ",".join(str(rank) for rank in ranks)


def _who(ranks):
    if not ranks:
        return "no rank"
    return f"rank{'s' if len(ranks) > 1 else ''} {_ranks(ranks)}"


def _shape(collective):
    return f" (input sizes {collective.input_sizes}, output sizes {collective.output_sizes})"


def _called(collective):
    # ", called at train.py:42 in step": the innermost frame of the program's in torch's record.
    frames = [f for f in collective.collective_frames if is_program(f["filename"])]
    if not frames:
        return ""
    return f", called at {frames[0]['filename']}:{frames[0]['line']} in {frames[0]['name']}"


def _where(results):
    """rank -> where its main thread is (its innermost frame of the program's own code)."""
    where = {}
    for result in results:
        threads = result.get("threads") or []
        if result.get("rank") is None or not threads or result.get("parent_pid") is not None:
            continue
        frames = threads[0]["frames"]
        own = [f for f in frames if is_program(f["file"])]
        frame = (own or frames or [None])[-1]
        if frame is not None:
            where.setdefault(
                result["rank"], f"at {frame['file']}:{frame['line']} in {frame['function']}"
            )
    return where
