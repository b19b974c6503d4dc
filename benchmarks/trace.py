"""AUTODBG_TRACE's slowdown next to PySnooper's and snoop's, and an untraced function's.

Usage: .venv/bin/python benchmarks/trace.py       (Python 3.11: the settrace path)
       python3.12 benchmarks/trace.py             (3.12+: sys.monitoring; PySnooper and snoop
                                                   must be importable there for their columns)

On the same code (tests/targets/trace_fixture.py: ``loop``, three lines per
iteration, and ``fib``, a recursive function), each tracer traces its own
copy of the module: autodbg through :func:`autodbg.trace.watch` (what
``AUTODBG_TRACE`` does at start-up), PySnooper and snoop through their
decorators, all writing to files in a temporary directory. Slowdown = traced
time / untraced time, best of several runs. Then the ratio of the untraced
``untraced`` function, timed again while the others are traced (goal: 1.0),
and on 3.12+ the floor: the slowdown an empty Python ``LINE`` callback of
``sys.monitoring`` alone gives the same code (measured 3.3x to 3.8x for the
loop: below that, no tracer built on per-line Python callbacks can go). Goals: autodbg's overhead (slowdown - 1) at least 10x below
PySnooper's on 3.11; at most 2.5x slowdown on 3.12+.
"""

import importlib.util
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURE = os.path.join(HERE, "..", "tests", "targets", "trace_fixture.py")
CASES = (("loop", 2000), ("fib", 12))


def load(name):
    """Return a fresh copy of the fixture module, registered as ``name``."""
    spec = importlib.util.spec_from_file_location(name, FIXTURE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def empty_callbacks(module):
    """Give ``module``'s functions an empty Python ``LINE`` callback (3.12+): any tracer's least cost."""
    monitoring = sys.monitoring
    tool = next(t for t in (5, 2, 1) if monitoring.get_tool(t) is None)
    monitoring.use_tool_id(tool, "benchmark floor")
    monitoring.register_callback(tool, monitoring.events.LINE, lambda code, line: None)
    for name, _ in CASES:
        monitoring.set_local_events(tool, getattr(module, name).__code__, monitoring.events.LINE)
    return module


def best(function, arg, rounds):
    """Return the best wall time of ``rounds`` calls of ``function(arg)``, in seconds."""
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        function(arg)
        times.append(time.perf_counter() - start)
    return min(times)


def main():
    folder = tempfile.mkdtemp(prefix="adtrace-")
    os.chmod(folder, 0o700)
    os.environ["AUTODBG_DIR"] = folder
    os.environ.setdefault("AUTODBG_JOB", "trace-benchmark")
    plain = load("bench_plain")
    baseline = {name: best(getattr(plain, name), n, 30) for name, n in CASES}
    untraced_before = best(plain.untraced, 20000, 100)

    ours = load("bench_autodbg")
    from autodbg import hooks, trace

    trace.watch([("bench_autodbg", name) for name, _ in CASES], hooks.after_import)
    results = {"autodbg": {name: best(getattr(ours, name), n, 5) for name, n in CASES}}
    untraced_after = best(plain.untraced, 20000, 100)

    try:
        import pysnooper
    except ImportError:
        pysnooper = None
    if pysnooper is not None:
        snooped = load("bench_pysnooper")
        for name, _ in CASES:
            output = os.path.join(folder, f"pysnooper-{name}.txt")
            setattr(snooped, name, pysnooper.snoop(output)(getattr(snooped, name)))
        results["PySnooper"] = {name: best(getattr(snooped, name), n, 2) for name, n in CASES}
    try:
        import snoop
    except ImportError:
        snoop = None
    if snoop is not None:
        snooped = load("bench_snoop")
        for name, _ in CASES:
            output = os.path.join(folder, f"snoop-{name}.txt")
            tracer = snoop.Config(out=output, columns=()).snoop
            setattr(snooped, name, tracer(getattr(snooped, name)))
        results["snoop"] = {name: best(getattr(snooped, name), n, 2) for name, n in CASES}

    version = ".".join(map(str, sys.version_info[:3]))
    print(f"Python {version}: slowdown of traced vs untraced code (best of runs)")
    print(f"{'tracer':<12}" + "".join(f"{f'{name}({n})':>14}" for name, n in CASES))
    for tracer, times in results.items():
        print(
            f"{tracer:<12}"
            + "".join(f"{times[name] / baseline[name]:>13.1f}x" for name, _ in CASES)
        )
    for tracer in ("PySnooper", "snoop"):
        if tracer in results:
            ratios = [
                (results[tracer][name] / baseline[name] - 1)
                / max(results["autodbg"][name] / baseline[name] - 1, 1e-9)
                for name, _ in CASES
            ]
            print(f"{tracer}'s overhead / autodbg's: " + ", ".join(f"{r:.0f}x" for r in ratios))
        else:
            print(f"{tracer}: not installed in this Python (pip install {tracer.lower()})")
    print(f"untraced function in the same process: {untraced_after / untraced_before:.2f}x")
    if sys.version_info >= (3, 12):
        floored = empty_callbacks(load("bench_floor"))
        floor = {name: best(getattr(floored, name), n, 5) for name, n in CASES}
        print(
            f"{'floor':<12}"
            + "".join(f"{floor[name] / baseline[name]:>13.1f}x" for name, _ in CASES)
            + "  (an empty sys.monitoring LINE callback on the same code, nothing recorded)"
        )
    goal = (
        "at most 2.5x slowdown"
        if sys.version_info >= (3, 12)
        else "10x less overhead than PySnooper"
    )
    print(f"goal ({version}): {goal}")


if __name__ == "__main__":
    main()
