"""What autodbg's wrapper of ``torch.distributed.init_process_group`` costs per call.

With ``AUTODBG=1``, autodbg patches ``torch.distributed`` when the program
imports it (``autodbg/torch_hooks.py``, ``patch``): each call of
``init_process_group`` then also goes through autodbg's replacements of
``distributed_c10d._get_default_timeout`` (``AUTODBG_PG_TIMEOUT`` for a
program that passes no timeout; called once) and ``_check_valid_timeout``
(the notice for a short one; called twice, by ``init_process_group`` and
``_new_process_group_helper``), then puts autodbg's ``sys.excepthook`` back
on top of torch's and reads the rank and world size (``_after_init``). This
script measures:

1. the wall time of one ``init_process_group("gloo", store=HashStore(),
   rank=0, world_size=1)`` with ``AUTODBG=1`` vs ``AUTODBG`` unset, and the
   difference;
2. the wrapper alone, in-process: the two replaced helpers as
   ``init_process_group`` calls them (with the originals they call), then
   (after the original ``init_process_group``, untimed) ``_after_init``;
3. that the ``AUTODBG=1`` child really calls the wrapper (its
   ``dist.init_process_group`` has ``__autodbg__``) and the other does not.

How: this script starts children of itself (``--child``), one per variant,
with the same environment apart from ``AUTODBG``: the caller's ``AUTODBG*``
and ``PYTHON*`` variables are dropped, and ``AUTODBG=1`` is added for one of
them. Each child imports ``torch.distributed``, makes ``WARMUP_CALLS``
untimed calls, then ``CALLS`` timed ones, each ``init_process_group`` with
``time.perf_counter`` around it alone, followed by an untimed
``destroy_process_group()``; it prints the times as JSON on stdout. The
``AUTODBG=1`` child then times the wrapper's parts over ``WRAPPER_CYCLES``
more cycles, calling the original (``dist.init_process_group.__wrapped__``,
set by ``functools.wraps``) between them as the wrapper does. So
the parts run right around a real ``init_process_group``, as in a program,
with Python's caches cold: there they take several times what they take
in a tight loop, which would understate
the cost. The children go in ``ROUNDS`` rounds of one child per variant, in a shuffled order each
round, so that drift of the machine hits both variants alike. Calls are
pooled per variant and summarised by their median. The 95% confidence
interval of the difference of the medians comes from a two-level bootstrap
(rounds with replacement, then each chosen child's calls with replacement),
since calls in one process share more than calls in two processes do. The
per-round differences of the children's medians show that spread too.

Goal: the wrapper adds under 1 ms per ``init_process_group`` call.

Run: ``.venv/bin/python benchmarks/init_process_group.py`` (needs torch with
gloo; about a minute and a half on two cores). Prints figures only: no timed
assertions, exit status 0. Without an importable torch it says so in one
line.
"""

import json
import os
import random
import statistics
import subprocess
import sys
import time

from measure import clean_env, log, verdict

ROUNDS = 8  # one child per variant each
WARMUP_CALLS = 20  # per child, untimed: first calls load gloo and warm caches
CALLS = 200  # timed init_process_group calls per child
WRAPPER_CYCLES = 100  # per AUTODBG=1 child, timing the wrapper's parts
BOOTSTRAP_RESAMPLES = 2000
GOAL_MS = 1.0
VARIANTS = {"unset": None, "enabled": "1"}  # name -> AUTODBG value
CHECK_TORCH = (
    "import torch.distributed as d\n"
    "print('ok' if d.is_available() and d.is_gloo_available() else"
    " 'torch.distributed or its gloo backend is not available')"
)


# --- child side -------------------------------------------------------------


def ms_since(start):
    return (time.perf_counter() - start) * 1000


def child(calls, wrapper_cycles):
    """Time ``init_process_group`` in this process; print the results as JSON."""
    import torch.distributed as dist

    times = []
    for _ in range(WARMUP_CALLS + calls):
        store = dist.HashStore()  # made outside the timing, as a program makes its store
        start = time.perf_counter()
        dist.init_process_group("gloo", store=store, rank=0, world_size=1)
        times.append(ms_since(start))
        dist.destroy_process_group()
    times = times[WARMUP_CALLS:]

    result = {
        "patched": bool(getattr(dist.init_process_group, "__autodbg__", False)),
        "c10d_patched": bool(
            getattr(dist.distributed_c10d.init_process_group, "__autodbg__", False)
        ),
        "autodbg_loaded": "autodbg" in sys.modules,
        "times": times,
    }
    if result["patched"]:
        result["wrapper"] = wrapper_parts(dist, wrapper_cycles)
    print(json.dumps(result))


def wrapper_parts(dist, cycles):
    """Time the wrapper's own work around the original ``init_process_group``.

    Each cycle does what the wrapper does, in its order: the replaced
    ``_get_default_timeout`` once and ``_check_valid_timeout`` twice (timed),
    the original call (untimed), then ``_after_init`` (timed, with the group
    initialised, as in the wrapper's ``finally``), then an untimed
    ``destroy_process_group``.

    Returns:
        dict[str, list[float]]: "before" and "after" times in ms, per cycle.
    """
    from autodbg import torch_hooks

    c10d = dist.distributed_c10d
    original = dist.init_process_group.__wrapped__
    gloo = dist.Backend("gloo")
    before, after = [], []
    for _ in range(cycles):
        store = dist.HashStore()
        start = time.perf_counter()
        timeout = c10d._get_default_timeout(gloo)
        c10d._check_valid_timeout(timeout)
        c10d._check_valid_timeout(timeout)
        before.append(ms_since(start))
        original("gloo", store=store, rank=0, world_size=1)
        start = time.perf_counter()
        torch_hooks._after_init(dist)
        after.append(ms_since(start))
        dist.destroy_process_group()
    return {"before": before, "after": after}


# --- parent side ------------------------------------------------------------


def run_child(env):
    """Run one measuring child and return its parsed JSON; on failure show its output, then raise."""
    done = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--child", str(CALLS), str(WRAPPER_CYCLES)],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
    )
    if done.returncode:
        sys.stderr.write(done.stdout + done.stderr)
        done.check_returncode()
    return json.loads(done.stdout.strip().splitlines()[-1])


def torch_problem():
    """Return None if the children can use gloo, else a one-line reason."""
    done = subprocess.run(
        [sys.executable, "-c", CHECK_TORCH],
        env=clean_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
    )
    if done.returncode == 0 and done.stdout.strip() == "ok":
        return None
    lines = (done.stdout.strip() or done.stderr.strip() or "no output").splitlines()
    return lines[-1]


def bootstrap_diff_ci(rounds, resample):
    """Return a 95% CI for median(enabled calls) - median(unset calls).

    Two levels: the rounds are drawn with replacement (keeping each round's
    pair of children together), then each drawn child's calls.

    Args:
        rounds (list[dict[str, list[float]]]): per round, variant -> call times.
        resample (random.Random): the source of the draws.
    """
    diffs = []
    for _ in range(BOOTSTRAP_RESAMPLES):
        pooled = {name: [] for name in VARIANTS}
        for chosen in resample.choices(rounds, k=len(rounds)):
            for name, sample in chosen.items():
                pooled[name].extend(resample.choices(sample, k=len(sample)))
        diffs.append(statistics.median(pooled["enabled"]) - statistics.median(pooled["unset"]))
    diffs.sort()
    return diffs[int(0.025 * BOOTSTRAP_RESAMPLES)], diffs[int(0.975 * BOOTSTRAP_RESAMPLES) - 1]


def quartiles(values):
    q1, q2, q3 = statistics.quantiles(values, n=4)
    return f"median {q2 * 1000:6.1f} us (IQR {q1 * 1000:.1f} .. {q3 * 1000:.1f})"


def report(rounds, flags, wrapper, resample):
    pooled = {name: [t for r in rounds for t in r[name]] for name in VARIANTS}
    medians = {name: statistics.median(sample) for name, sample in pooled.items()}
    diff = medians["enabled"] - medians["unset"]
    ci = bootstrap_diff_ci(rounds, resample)
    round_diffs = [statistics.median(r["enabled"]) - statistics.median(r["unset"]) for r in rounds]

    print(
        f"init_process_group('gloo', store=HashStore(), rank=0, world_size=1), in ms:"
        f" {ROUNDS} rounds of one child per variant, {CALLS} timed calls per child"
    )
    for name, label in (("unset", "AUTODBG unset"), ("enabled", "AUTODBG=1")):
        sample = pooled[name]
        q1, _, q3 = statistics.quantiles(sample, n=4)
        print(
            f"  {label:14} median {medians[name]:.3f}  (IQR {q1:.3f} .. {q3:.3f},"
            f" {len(sample)} calls)"
        )
    print(
        f"  difference     {diff:+.3f} (95% CI {ci[0]:+.3f} .. {ci[1]:+.3f})"
        f"  ratio {medians['enabled'] / medians['unset']:.3f}"
    )
    print(
        f"  per-round differences of the children's medians: median"
        f" {statistics.median(round_diffs):+.3f}, range {min(round_diffs):+.3f} .. {max(round_diffs):+.3f}"
    )
    print(f"goal: the wrapper adds under {GOAL_MS} ms per call: {verdict(ci, GOAL_MS)}")

    before, after = wrapper["before"], wrapper["after"]
    if len(before) >= 2:
        total = [b + a for b, a in zip(before, after)]
        print(f"wrapper alone, in the AUTODBG=1 children ({len(total)} cycles):")
        print(f"  timeout helpers (default + 2 checks)     {quartiles(before)}")
        print(f"  _after_init (excepthook, identity)       {quartiles(after)}")
        print(f"  both, per call                           {quartiles(total)}")
    else:
        print("wrapper alone: not timed, no child had the wrapper")

    for name, label in (("enabled", "AUTODBG=1"), ("unset", "AUTODBG unset")):
        seen = flags[name]
        print(
            f"{label} child: dist.init_process_group.__autodbg__ = {seen['patched']},"
            f" distributed_c10d.init_process_group.__autodbg__ = {seen['c10d_patched']},"
            f" autodbg imported = {seen['autodbg_loaded']}"
        )
    expected = {"enabled": True, "unset": False}
    if any(set(flags[name]["patched_seen"]) != {expected[name]} for name in VARIANTS):
        print(
            "WARNING: a child did not run as intended (patched vs not): the comparison is not valid"
        )
    else:
        print("check: every AUTODBG=1 child ran the wrapper, no AUTODBG unset child did")


def main():
    problem = torch_problem()
    if problem is not None:
        print(f"torch.distributed with gloo is not importable here ({problem}): nothing measured")
        return
    seeded = random.Random(0)  # reproducible orders and confidence intervals
    envs = {name: clean_env(value) for name, value in VARIANTS.items()}
    rounds, flags, wrapper = [], {}, {"before": [], "after": []}
    names = list(VARIANTS)
    log(
        f"{ROUNDS} rounds of one child per variant, {WARMUP_CALLS} warm-up"
        f" + {CALLS} timed calls each"
    )
    for number in range(ROUNDS):
        seeded.shuffle(names)
        this_round = {}
        for name in names:
            result = run_child(envs[name])
            this_round[name] = result["times"]
            seen = flags.setdefault(name, {"patched_seen": []})
            seen["patched_seen"].append(result["patched"])
            seen.update({key: result[key] for key in ("patched", "c10d_patched", "autodbg_loaded")})
            for part in ("before", "after"):
                wrapper[part].extend(result.get("wrapper", {}).get(part, []))
        rounds.append(this_round)
        log(
            f"  round {number + 1}/{ROUNDS}: "
            + ", ".join(f"{name} {statistics.median(this_round[name]):.3f} ms" for name in VARIANTS)
        )
    report(rounds, flags, wrapper, seeded)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(int(sys.argv[2]), int(sys.argv[3]))
    else:
        main()
