"""What the hang watchdog costs a training loop, measured side by side in one run.

Three variants run the same loop in child processes: autodbg off (``AUTODBG``
unset), autodbg on with ``AUTODBG_HANG`` unset (the watchdog does not exist),
and autodbg on with ``AUTODBG_HANG=60`` (a thread samples the main thread's
frame every second). The loop is a stand-in for a training step in pure
Python: a few thousand float multiply-adds per step, 2,000 steps, timed in the
child with ``time.perf_counter``. Rounds run one child per variant in a
shuffled order; the figures are medians over rounds and the ratios of each
variant to autodbg off. Goal: no measurable overhead with ``AUTODBG_HANG``
unset (a ratio of 1.00 within the noise).

Run: ``.venv/bin/python benchmarks/hang.py`` (stdlib only, about a minute).
Prints figures only: no timed assertions, exit status 0.
"""

import random
import statistics
import subprocess
import sys

from measure import clean_env, log

ROUNDS = 15
LOOP = """
import time
weights = [0.5] * 64
start = time.perf_counter()
for step in range(2000):
    total = 0.0
    for i in range(64):
        for j in range(16):
            total += weights[i] * (j + step)
print(time.perf_counter() - start)
"""
VARIANTS = {
    "autodbg off (AUTODBG unset)": clean_env(),
    "AUTODBG=1, AUTODBG_HANG unset": clean_env("1"),
    "AUTODBG=1, AUTODBG_HANG=60": dict(clean_env("1"), AUTODBG_HANG="60"),
}


def run(env):
    """Run the loop in a child and return its seconds."""
    done = subprocess.run([sys.executable, "-c", LOOP], env=env, capture_output=True, text=True, check=True)
    return float(done.stdout)


def main():
    times = {name: [] for name in VARIANTS}
    for round_ in range(ROUNDS):
        log(f"round {round_ + 1}/{ROUNDS}")
        order = list(VARIANTS)
        random.shuffle(order)
        for name in order:
            times[name].append(run(VARIANTS[name]))
    base = statistics.median(times["autodbg off (AUTODBG unset)"])
    print(f"training-loop stand-in (2,000 steps), median of {ROUNDS} interleaved rounds")
    for name, values in times.items():
        median = statistics.median(values)
        spread = statistics.quantiles(values, n=4)
        print(f"  {name:32s} {median * 1000:8.1f} ms  (IQR {spread[0] * 1000:.1f} .. {spread[2] * 1000:.1f})  ratio {median / base:.3f}")
    print("goal: no measurable overhead with AUTODBG_HANG unset (ratio 1.00 within the IQR)")


if __name__ == "__main__":
    main()
