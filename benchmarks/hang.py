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

Then what one sample costs the watchdog's thread (two reads of ``/proc`` and
``sys._current_frames()``, timed in this process), and how many reports the
watchdog gives with ``AUTODBG_HANG=1``: for a healthy loop whose steps each
sleep 50 ms for 5 s (goal 0; the old rule, same frame at the same
instruction, reported it) and for a main thread blocked in one 3 s sleep
(goal 1).

Run: ``.venv/bin/python benchmarks/hang.py`` (stdlib and autodbg only, under a minute).
Prints figures only: no timed assertions, exit status 0.
"""

import _thread
import random
import statistics
import subprocess
import sys
import time

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


HEALTHY = """
import time
end = time.monotonic() + 5
while time.monotonic() < end:
    time.sleep(0.05)
"""
BLOCKED = "import time; time.sleep(3)"


def run(env):
    """Run the loop in a child and return its seconds."""
    done = subprocess.run(
        [sys.executable, "-c", LOOP], env=env, capture_output=True, text=True, check=True
    )
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
        print(
            f"  {name:32s} {median * 1000:8.1f} ms  (IQR {spread[0] * 1000:.1f} .. {spread[2] * 1000:.1f})  ratio {median / base:.3f}"
        )
    print("goal: no measurable overhead with AUTODBG_HANG unset (ratio 1.00 within the IQR)")
    print(f"one sample of the watchdog: median {sample_cost() * 1e6:.1f} us, once per interval")
    for name, program, goal in (
        ("healthy loop, 50 ms sleep per step, 5 s", HEALTHY, 0),
        ("main thread blocked in one 3 s sleep", BLOCKED, 1),
    ):
        print(f"reports with AUTODBG_HANG=1, {name:42s} {reports(program)}  (goal {goal})")


def sample_cost():
    """Return the median seconds of one sample (what the watchdog reads), over 2,000 samples."""
    from autodbg import watchdog

    task, main, costs = f"/proc/self/task/{_thread.get_native_id()}/", _thread.get_ident(), []
    for _ in range(2000):
        start = time.perf_counter()
        frame = sys._current_frames()[main]
        sample = (frame.f_code, frame.f_lasti, watchdog._accounting(task))
        costs.append(time.perf_counter() - start)
    del frame, sample
    return statistics.median(costs)


def reports(program):
    """Run ``program`` with ``AUTODBG_HANG=1`` and count the watchdog's reports on its stderr."""
    env = dict(clean_env("1"), AUTODBG_HANG="1")
    done = subprocess.run(
        [sys.executable, "-c", program], env=env, capture_output=True, text=True, check=True
    )
    return done.stderr.count("no progress for")


if __name__ == "__main__":
    main()
