"""What autodbg costs at interpreter start-up, measured side by side in one run.

autodbg is active in every interpreter of a venv it is installed in: its
``autodbg.pth`` runs one line at each start-up, and imports the bootstrap
when ``AUTODBG`` is true. This script measures that cost:

1. ``python -c pass`` (normal ``site`` processing) in a venv without autodbg
   vs a venv with autodbg installed and ``AUTODBG`` unset;
2. in the venv with autodbg: ``AUTODBG=1`` vs ``AUTODBG`` unset;
3. the in-process cost of the bootstrap, from ``python -X importtime``;
4. the modules the bootstrap adds to ``sys.modules``.

How: two temporary venvs are made the same way (``python -m venv``, same base
interpreter), and autodbg is installed from this repository into one of them,
so the only difference is autodbg and its ``.pth``. The runs of all variants
are interleaved, in a shuffled order each round, so that drift (CPU frequency,
other load) hits every variant alike. Each run is timed from the parent with
``time.perf_counter`` around ``subprocess.run``; the figures are the median and
a trimmed mean, with a bootstrap 95% confidence interval for the difference of
medians, so that a difference can be told from noise.

Goals: at most +0.2 ms with ``AUTODBG`` unset, at most +1 ms with ``AUTODBG=1``.

Run: ``.venv/bin/python benchmarks/startup.py`` (stdlib only; under a minute or
two). Prints figures only: no timed assertions, exit status 0.
"""

import importlib.util
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
WARMUP_RUNS = 10  # per variant; also lets the children write any missing .pyc
RUNS = 200  # per variant
IMPORTTIME_RUNS = 30
TRIM = 0.1  # fraction dropped at each end for the trimmed mean
BOOTSTRAP_RESAMPLES = 2000
GOAL_UNSET_MS = 0.2
GOAL_ENABLED_MS = 1.0
PRINT_MODULES = "import sys; m = sorted(sys.modules); print(' '.join(m))"


def log(message):
    """Progress goes to stderr, so that stdout holds only the results."""
    print(message, file=sys.stderr, flush=True)


def base_interpreter():
    """Return the interpreter that the venv running this script was made from."""
    return os.path.realpath(getattr(sys, "_base_executable", sys.executable))


def clean_env(autodbg=None):
    """Return the environment for a measured child.

    The caller's ``AUTODBG*`` variables are dropped so that the unset case is
    really unset and ``AUTODBG_MODE`` & co. cannot change the enabled case;
    ``PYTHON*`` variables (``PYTHONPATH``, ``PYTHONPROFILEIMPORTTIME``...) are
    dropped so that the caller's settings do not shape the start-up measured.

    Args:
        autodbg (str | None): the value of ``AUTODBG``, None to leave it unset.
    """
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("AUTODBG", "PYTHON"))
    }
    if autodbg is not None:
        env["AUTODBG"] = autodbg
    return env


def run(*command, env=None):
    """Run a set-up command; on failure show its output, then raise."""
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode:
        sys.stderr.write(done.stdout + done.stderr)
        done.check_returncode()
    return done.stdout


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
    run(sys.executable, "-m", "pip", "wheel", *quiet, "--no-deps", *isolation,
        "--wheel-dir", str(wheels), str(REPO))
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
    )
    return (time.perf_counter() - start) * 1000


def time_interleaved(variants, rounds, shuffle):
    """Time ``rounds`` runs of each variant, one of each per round.

    Args:
        variants (dict[str, tuple[str, dict]]): name -> (python, env).
        rounds (int): runs per variant.
        shuffle (random.Random): reorders each round, so that no variant
            always runs right after the same other one.

    Returns:
        dict[str, list[float]]: name -> wall times in ms.
    """
    times = {name: [] for name in variants}
    names = list(variants)
    for _ in range(rounds):
        shuffle.shuffle(names)
        for name in names:
            times[name].append(time_once(*variants[name]))
    return times


def trimmed_mean(values):
    values = sorted(values)
    cut = int(len(values) * TRIM)
    return statistics.fmean(values[cut : len(values) - cut])


def median_diff_ci(base, other, resample):
    """Return a bootstrap 95% confidence interval for median(other) - median(base)."""
    diffs = sorted(
        statistics.median(resample.choices(other, k=len(other)))
        - statistics.median(resample.choices(base, k=len(base)))
        for _ in range(BOOTSTRAP_RESAMPLES)
    )
    return diffs[int(0.025 * len(diffs))], diffs[int(0.975 * len(diffs)) - 1]


def verdict(ci, goal):
    """Judge a goal on the confidence interval, not the point estimate alone."""
    low, high = ci
    if high <= goal:
        return "met"
    if low > goal:
        return "NOT met"
    return "inconclusive: the 95% CI spans the goal"


def autodbg_import_us(python, env):
    """Return the in-process cost of the bootstrap, in µs, from ``-X importtime``.

    The ``.pth`` imports ``autodbg._bootstrap`` inside ``site``; its parent
    package and its own imports nest under it. Summing the cumulative time of
    the shallowest ``autodbg*`` lines counts each of them once.
    """
    done = subprocess.run(
        [python, "-X", "importtime", "-c", "pass"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        check=True,
    )
    entries = []  # (depth, cumulative µs)
    for line in done.stderr.splitlines():
        fields = line.removeprefix("import time:").split("|")
        if len(fields) != 3 or not fields[1].strip().isdigit():
            continue  # the header line, or a warning
        name = fields[2][1:]  # one space, then two spaces per nesting level
        if name.lstrip().startswith("autodbg"):
            entries.append(((len(name) - len(name.lstrip())) // 2, int(fields[1])))
    if not entries:
        return 0  # autodbg was not imported; the module lists below show it
    top = min(depth for depth, _ in entries)
    return sum(cumulative for depth, cumulative in entries if depth == top)


def modules_at_startup(python, env):
    """Return the set of modules loaded before ``-c`` code runs (its own code imports none)."""
    return set(run(python, "-c", PRINT_MODULES, env=env).split())


def report(times, ci_resample, import_us, added_enabled, added_unset):
    """Print the results table, the goals and the module lists."""
    without, unset, enabled = (times[name] for name in ("without", "unset", "enabled"))
    print(f"start-up (python -c pass), {RUNS} interleaved runs each, in ms"
          f" (trimmed mean drops {TRIM:.0%} at each end)")
    print(f"  {'':30} {'median':>7} {'trimmed':>8}   {'diff median (95% CI)':<26}"
          f" {'diff trimmed':>12}  ratio")
    rows = [
        ("venv without autodbg", without, None, ""),
        ("with autodbg, AUTODBG unset", unset, without, "vs without"),
        ("with autodbg, AUTODBG=1", enabled, unset, "vs unset"),
    ]
    cis = {}
    for label, sample, base, against in rows:
        line = f"  {label:30} {statistics.median(sample):7.2f} {trimmed_mean(sample):8.2f}"
        if base is not None:
            diff = statistics.median(sample) - statistics.median(base)
            cis[label] = low, high = median_diff_ci(base, sample, ci_resample)
            interval = f"{diff:+.2f} ({low:+.2f} .. {high:+.2f})"
            line += (f"   {interval:<26} {trimmed_mean(sample) - trimmed_mean(base):+12.2f}"
                     f"  {statistics.median(sample) / statistics.median(base):.3f} {against}")
        print(line)
    print(f"goals: AUTODBG unset at most +{GOAL_UNSET_MS} ms:"
          f" {verdict(cis['with autodbg, AUTODBG unset'], GOAL_UNSET_MS)};"
          f" AUTODBG=1 at most +{GOAL_ENABLED_MS} ms:"
          f" {verdict(cis['with autodbg, AUTODBG=1'], GOAL_ENABLED_MS)}")
    print(f"autodbg import time (-X importtime, AUTODBG=1): median {import_us:.0f} us"
          f" over {IMPORTTIME_RUNS} runs")
    print(f"modules the bootstrap adds: {' '.join(sorted(added_enabled)) or 'none (!)'}")
    print(f"modules added with AUTODBG unset (vs venv without autodbg):"
          f" {' '.join(sorted(added_unset)) or 'none'}")


def main():
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
        log(f"warming up ({WARMUP_RUNS} runs each), then timing ({RUNS} runs each)")
        time_interleaved(variants, WARMUP_RUNS, seeded)
        times = time_interleaved(variants, RUNS, seeded)

        log(f"-X importtime ({IMPORTTIME_RUNS} runs)")
        import_us = statistics.median(
            autodbg_import_us(with_python, clean_env(autodbg="1"))
            for _ in range(IMPORTTIME_RUNS)
        )
        added_enabled = modules_at_startup(with_python, clean_env(autodbg="1")) - (
            modules_at_startup(with_python, clean_env())
        )
        added_unset = modules_at_startup(with_python, clean_env()) - modules_at_startup(
            without_python, clean_env()
        )
    report(times, seeded, import_us, added_enabled, added_unset)


if __name__ == "__main__":
    main()
