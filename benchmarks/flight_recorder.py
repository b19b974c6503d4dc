"""What torch's Flight Recorder costs per collective: a gloo ``all_reduce`` of a small tensor, 2 ranks.

autodbg can turn the Flight Recorder on for a job's ranks (``TORCH_FR_BUFFER_SIZE``,
:mod:`autodbg.collectives`); torch then records each collective in a ring
buffer, with the Python stack that called it. This script measures what that
adds to the cheapest collective there is, where it shows most: an
``all_reduce`` of 4 floats between 2 gloo ranks on one host.

How: each round starts one 2-rank job per variant (``TORCH_FR_BUFFER_SIZE``
unset, and set to :data:`BUFFER`), in a shuffled order, with the same
environment otherwise (no ``AUTODBG*``: torch alone is measured). Each rank
makes ``WARMUP`` untimed calls, then ``BATCHES`` batches of ``BATCH`` calls,
``time.perf_counter`` around each batch; rank 0 prints its per-call times as
JSON. Times are pooled per variant and summarised by their median; the 95%
confidence interval of the ratio of the medians comes from a bootstrap over
the rounds (one job per variant per round, resampled together).

Goal (issue 11): under 2 % more per collective, to make it autodbg's default.

Run: ``.venv/bin/python benchmarks/flight_recorder.py`` (about a minute on two
cores). Prints figures only, exit status 0. Without torch it says so in one line.
"""

import json
import random
import socket
import statistics
import subprocess
import sys
import time

from measure import clean_env, log, verdict

BUFFER = "2000"  # the ring buffer's entries, as autodbg sets it
ROUNDS = 5
WARMUP = 300
BATCHES = 20
BATCH = 100
GOAL = 1.02  # ratio of the medians


def child():
    import torch
    import torch.distributed as dist

    dist.init_process_group("gloo")
    tensor = torch.ones(4)
    for _ in range(WARMUP):
        dist.all_reduce(tensor)
    times = []
    for _ in range(BATCHES):
        began = time.perf_counter()
        for _ in range(BATCH):
            dist.all_reduce(tensor)
        times.append((time.perf_counter() - began) / BATCH)
    dist.barrier()
    if dist.get_rank() == 0:
        print(json.dumps(times))
    dist.destroy_process_group()


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def job(recorder, ranks):
    """Run one job of ``ranks`` ranks; return rank 0's per-call times in seconds."""
    port = free_port()
    procs = []
    for rank in range(ranks):
        env = clean_env()
        env.pop("TORCH_FR_BUFFER_SIZE", None)
        env.update(
            RANK=str(rank), WORLD_SIZE=str(ranks), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
        )
        if recorder:
            env["TORCH_FR_BUFFER_SIZE"] = BUFFER
        procs.append(
            subprocess.Popen(
                [sys.executable, __file__, "--child"],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
        )
    out = [proc.communicate(timeout=120)[0] for proc in procs]
    if any(proc.returncode for proc in procs):
        raise SystemExit("a measured rank failed")
    return json.loads(out[0])


def main():
    try:
        import torch.distributed  # noqa: F401
    except ImportError:
        print("benchmarks/flight_recorder.py needs torch with torch.distributed; nothing measured")
        return
    for ranks in (2, 1):
        measure(ranks)


def measure(ranks):
    rounds = []
    for number in range(ROUNDS):
        variants = [False, True]
        random.shuffle(variants)
        rounds.append({recorder: job(recorder, ranks) for recorder in variants})
        log(f"{ranks} rank(s): round {number + 1}/{ROUNDS}")
    off = [t for r in rounds for t in r[False]]
    on = [t for r in rounds for t in r[True]]
    ratio = statistics.median(on) / statistics.median(off)
    boot = []
    for _ in range(2000):
        picked = [random.choice(rounds) for _ in rounds]
        boot.append(
            statistics.median(t for r in picked for t in r[True])
            / statistics.median(t for r in picked for t in r[False])
        )
    boot.sort()
    ci = (boot[int(0.025 * len(boot))], boot[int(0.975 * len(boot))])
    print(
        f"gloo all_reduce of 4 floats, {ranks} rank(s), {ROUNDS} rounds x {BATCHES * BATCH} calls"
    )
    print(f"  without the Flight Recorder: median {statistics.median(off) * 1e6:.1f} us per call")
    print(
        f"  TORCH_FR_BUFFER_SIZE={BUFFER}:   median {statistics.median(on) * 1e6:.1f} us per call"
    )
    print(
        f"  ratio {ratio:.3f} (95% CI {ci[0]:.3f}-{ci[1]:.3f}); "
        f"{(statistics.median(on) - statistics.median(off)) * 1e6:+.1f} us per collective"
    )
    per_round = [statistics.median(r[True]) / statistics.median(r[False]) for r in rounds]
    print(f"  per-round ratios: {', '.join(f'{x:.3f}' for x in per_round)}")
    print(f"  goal: ratio under {GOAL:.2f}: {verdict(ci, GOAL)}")


if __name__ == "__main__":
    if sys.argv[1:] == ["--child"]:
        child()
    else:
        main()
