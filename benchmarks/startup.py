"""What autodbg costs at interpreter start-up, measured side by side in one run.

autodbg is active in every interpreter of a venv it is installed in: its
``autodbg.pth`` runs one line at each start-up, and imports the bootstrap
when ``AUTODBG`` is true. This script measures that cost:

1. ``python -c pass`` (normal ``site`` processing) in a venv without autodbg
   vs a venv with autodbg installed and ``AUTODBG`` unset;
2. in the venv with autodbg: ``AUTODBG=1`` vs ``AUTODBG`` unset;
3. the in-process costs: the bootstrap's, from ``python -X importtime`` with
   ``AUTODBG=1``, and the ``.pth`` line's with ``AUTODBG`` unset, timed around
   ``site.addpackage`` (which ``-X importtime`` cannot see: nothing is imported);
4. the modules the bootstrap adds to ``sys.modules``;
5. when valgrind is installed, the instructions each variant executes
   (callgrind's total, the least of a few runs): a figure that the load of a
   shared machine does not move, unlike the times, so that a change of a few
   tens of µs shows up in one run.

How: two temporary venvs are made the same way (``python -m venv``, same base
interpreter), and autodbg is installed from this repository into one of them,
so the only difference is autodbg and its ``.pth``. Each run is timed from the
parent with ``time.perf_counter`` around ``subprocess.run``. The runs go in
rounds of one run per variant, in a shuffled order each round. Single runs
spread over several ms on a busy or virtual machine, far more than the
differences sought, but most of that spread is shared by the runs of a round;
so the differences are taken per round (paired) and summarised by their median
and trimmed mean, with a bootstrap 95% confidence interval for the median.
The ratio is the base variant's median plus that difference, over the former.

Goals: at most +0.2 ms with ``AUTODBG`` unset, at most +1 ms with ``AUTODBG=1``.

Run: ``.venv/bin/python benchmarks/startup.py [--rounds N]`` (stdlib only,
about a minute on two cores; fewer rounds while developing). Prints figures
only: no timed assertions, exit status 0.
"""

import argparse
import importlib.util
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from measure import clean_env, log, verdict

REPO = Path(__file__).resolve().parent.parent
WARMUP_ROUNDS = 10  # also lets the children write any missing .pyc
ROUNDS = 200  # one run per variant each (the default of --rounds)
IMPORTTIME_RUNS = 30
CALLGRIND_RUNS = 3  # callgrind's counts vary by about 0.1% from run to run
TRIM = 0.1  # fraction dropped at each end for the trimmed mean
BOOTSTRAP_RESAMPLES = 2000
GOAL_UNSET_MS = 0.2
GOAL_ENABLED_MS = 1.0
PRINT_MODULES = "import sys; m = sorted(sys.modules); print(' '.join(m))"


def base_interpreter():
    """Return the interpreter that the venv running this script was made from."""
    return os.path.realpath(getattr(sys, "_base_executable", sys.executable))


def run(*command, env=None, stream="stdout"):
    """Run a command that is not timed and return its stdout (or stderr).

    On failure, show its output, then raise.
    """
    done = subprocess.run(
        command, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False
    )
    if done.returncode:
        sys.stderr.write(done.stdout + done.stderr)
        done.check_returncode()
    return getattr(done, stream)


def make_venv(path):
    """Create a venv at ``path`` and return its python."""
    run(base_interpreter(), "-m", "venv", str(path))
    return str(path / "bin" / "python")


def install_autodbg(python, scratch):
    """Install autodbg from this repository into the venv of ``python``.

    The wheel is built by the interpreter running this script: with
    ``--no-build-isolation`` when hatchling is importable here (no network
    needed; the fresh venv has no hatchling to build with), else in an isolated
    build that downloads it. The venv's own pip then installs the wheel, as a
    user's ``pip install`` would.
    """
    isolation = ["--no-build-isolation"] if importlib.util.find_spec("hatchling") else []
    wheels = scratch / "wheels"
    quiet = ["--quiet", "--disable-pip-version-check", "--no-cache-dir"]
    run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        *quiet,
        "--no-deps",
        *isolation,
        "--wheel-dir",
        str(wheels),
        str(REPO),
    )
    (wheel,) = wheels.glob("autodbg-*.whl")
    run(python, "-m", "pip", "install", *quiet, "--no-deps", "--no-index", str(wheel))


def time_once(python, env):
    """Return the wall time of one ``python -c pass``, in ms."""
    start = time.perf_counter()
    subprocess.run(
        [python, "-c", "pass"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=True,  # a failing child would time something else
    )
    return (time.perf_counter() - start) * 1000


def time_interleaved(variants, rounds, shuffle):
    """Time ``rounds`` rounds of one run of each variant.

    Args:
        variants (dict[str, tuple[str, dict]]): name -> (python, env).
        rounds (int): runs per variant.
        shuffle (random.Random): reorders each round, so that no variant
            always runs right after the same other one.

    Returns:
        dict[str, list[float]]: name -> wall times in ms, in round order.
    """
    times = {name: [] for name in variants}
    names = list(variants)
    for _ in range(rounds):
        shuffle.shuffle(names)
        for name in names:
            times[name].append(time_once(*variants[name]))
    return times


def trimmed_mean(values):
    """Return the mean of ``values`` without the ``TRIM`` fraction at each end."""
    values = sorted(values)
    cut = int(len(values) * TRIM)
    return statistics.fmean(values[cut : len(values) - cut])


def paired_diff(base, other, resample):
    """Compare two variants timed in the same rounds, round by round.

    Returns:
        tuple[float, float, tuple[float, float]]: the median and trimmed mean of
        ``other - base`` per round, and a bootstrap 95% confidence interval
        for that median.
    """
    diffs = [b - a for a, b in zip(base, other)]
    medians = sorted(
        statistics.median(resample.choices(diffs, k=len(diffs))) for _ in range(BOOTSTRAP_RESAMPLES)
    )
    ci = medians[int(0.025 * BOOTSTRAP_RESAMPLES)], medians[int(0.975 * BOOTSTRAP_RESAMPLES) - 1]
    return statistics.median(diffs), trimmed_mean(diffs), ci


def autodbg_import_us(python, env):
    """Return the in-process cost of the bootstrap, in µs, from ``-X importtime``.

    The ``.pth`` imports ``autodbg.hooks`` inside ``site``; its parent
    package and its own imports nest under it. Summing the cumulative time of
    the shallowest ``autodbg*`` lines counts each of them once.
    """
    stderr = run(python, "-X", "importtime", "-c", "pass", env=env, stream="stderr")
    entries = []  # (depth, cumulative µs)
    for line in stderr.splitlines():
        fields = line.removeprefix("import time:").split("|")
        if len(fields) != 3 or not fields[1].strip().isdigit():
            continue  # the header line, or a warning
        name = fields[2][1:]  # one space, then two spaces per nesting level
        if name.lstrip().startswith("autodbg"):
            entries.append(((len(name) - len(name.lstrip())) // 2, int(fields[1])))
    if not entries:
        return 0  # autodbg was not imported; the module lists show it too
    top = min(depth for depth, _ in entries)
    return sum(cumulative for depth, cumulative in entries if depth == top)


def pth_us(python, env):
    """Return the in-process cost of ``autodbg.pth`` with ``AUTODBG`` unset, in µs.

    Times ``site.addpackage``, which is what ``site`` calls for each ``.pth`` at
    start-up: open, read, ``exec`` the line. Done again after start-up, it runs
    warm, so the figure leaves out first-use costs that start-up may pay.
    """
    code = (
        "import site, sysconfig, time\n"
        "site_packages = sysconfig.get_path('purelib')\n"  # slow: keep it out of the timing
        "start = time.perf_counter()\n"
        "site.addpackage(site_packages, 'autodbg.pth', set())\n"
        "print((time.perf_counter() - start) * 1e6)"
    )
    return float(run(python, "-c", code, env=env))


def instructions(python, env):
    """Return the fewest instructions that ``python -c pass`` executes in ``CALLGRIND_RUNS`` runs.

    Counted by valgrind's callgrind (about 3 s a run): the whole process,
    interpreter start-up and shutdown included.
    """
    counts = []
    for _ in range(CALLGRIND_RUNS):
        stderr = run(
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            python,
            "-c",
            "pass",
            env=env,
            stream="stderr",
        )
        (line,) = [line for line in stderr.splitlines() if "Collected :" in line]
        counts.append(int(line.split()[-1]))
    return min(counts)


def modules_at_startup(python, env):
    """Return the modules loaded when ``-c`` code starts (the code imports nothing)."""
    return set(run(python, "-c", PRINT_MODULES, env=env).split())


def report(times, resample, import_us, pth_cost_us, added_enabled, added_unset, counts):
    """Print the results table, the goals, the module lists and the instruction counts."""
    print(
        f"start-up (python -c pass): {len(times['without'])} rounds of one run per variant, in ms;"
        f" trimmed means drop {TRIM:.0%} at each end"
    )
    print(
        f"  {'':29} {'median':>7} {'trimmed':>8}   {'paired diff (95% CI)':<24}"
        f" {'trimmed':>7}  ratio"
    )
    rows = [
        ("venv without autodbg", "without", None),
        ("with autodbg, AUTODBG unset", "unset", "without"),
        ("with autodbg, AUTODBG=1", "enabled", "unset"),
    ]
    cis = {}
    for label, name, base in rows:
        sample = times[name]
        line = f"  {label:29} {statistics.median(sample):7.2f} {trimmed_mean(sample):8.2f}"
        if base is not None:
            diff, trimmed, cis[name] = paired_diff(times[base], sample, resample)
            ratio = 1 + diff / statistics.median(times[base])
            interval = f"{diff:+.2f} ({cis[name][0]:+.2f} .. {cis[name][1]:+.2f})"
            line += f"   {interval:<24} {trimmed:+7.2f}  {ratio:.3f} vs {base}"
        print(line)
    print(
        f"goals: AUTODBG unset at most +{GOAL_UNSET_MS} ms:"
        f" {verdict(cis['unset'], GOAL_UNSET_MS)};"
        f" AUTODBG=1 at most +{GOAL_ENABLED_MS} ms:"
        f" {verdict(cis['enabled'], GOAL_ENABLED_MS)}"
    )
    print(
        f"in-process, median of {IMPORTTIME_RUNS} runs:"
        f" bootstrap import (-X importtime, AUTODBG=1) {import_us:.0f} us;"
        f" autodbg.pth line (AUTODBG unset) {pth_cost_us:.0f} us"
    )
    print(f"modules the bootstrap adds: {' '.join(sorted(added_enabled)) or 'none (!)'}")
    print(
        f"modules added with AUTODBG unset (vs venv without autodbg):"
        f" {' '.join(sorted(added_unset)) or 'none'}"
    )
    if counts is None:
        print("instructions: valgrind is not installed")
        return
    print(f"instructions (callgrind, least of {CALLGRIND_RUNS} runs each):")
    for label, name, base in rows:
        line = f"  {label:29} {counts[name] / 1e6:7.2f} M"
        if base is not None:
            diff = counts[name] - counts[base]
            line += f"   {diff / 1e6:+.2f} M = {diff / counts[base]:+.1%} vs {base}"
        print(line)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--rounds", type=int, default=ROUNDS, help=f"timed rounds (default {ROUNDS})"
    )
    rounds = parser.parse_args().rounds
    seeded = random.Random(0)  # reproducible orders and confidence intervals
    with tempfile.TemporaryDirectory(prefix="autodbg-startup-") as scratch:
        scratch = Path(scratch)
        log(f"creating two venvs from {base_interpreter()} in {scratch}")
        without_python = make_venv(scratch / "without")
        with_python = make_venv(scratch / "with")
        log("installing autodbg into one of them")
        install_autodbg(with_python, scratch)

        variants = {
            "without": (without_python, clean_env()),
            "unset": (with_python, clean_env()),
            "enabled": (with_python, clean_env(autodbg="1")),
        }
        log(f"warming up ({WARMUP_ROUNDS} rounds), then timing ({rounds} rounds)")
        time_interleaved(variants, WARMUP_ROUNDS, seeded)
        times = time_interleaved(variants, rounds, seeded)

        log(f"in-process costs ({IMPORTTIME_RUNS} runs each)")
        import_us = statistics.median(
            autodbg_import_us(with_python, clean_env(autodbg="1")) for _ in range(IMPORTTIME_RUNS)
        )
        pth_cost_us = statistics.median(
            pth_us(with_python, clean_env()) for _ in range(IMPORTTIME_RUNS)
        )
        startup_modules = {name: modules_at_startup(*variants[name]) for name in variants}
        counts = None
        if shutil.which("valgrind"):
            log(f"counting instructions ({CALLGRIND_RUNS} callgrind runs each)")
            counts = {name: instructions(*variants[name]) for name in variants}
    report(
        times,
        seeded,
        import_us,
        pth_cost_us,
        added_enabled=startup_modules["enabled"] - startup_modules["unset"],
        added_unset=startup_modules["unset"] - startup_modules["without"],
        counts=counts,
    )


if __name__ == "__main__":
    main()
