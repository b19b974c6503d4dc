"""``reload`` time for a 2,000-line module with one function changed (goal: under 50 ms).

Usage: .venv/bin/python benchmarks/reload.py [--rounds N]

Writes a module of 2,000 lines (functions, classes with methods, a decorated
function and a closure) to a temporary directory, imports it, then each
round changes one function's body (a new constant, so each round is a real
change) and times :func:`autodbg.reload.reload` in this process: stat, read,
hash, parse, scratch evaluation of every definition, comparison and patch.
Also prints the time of a ``reload`` that finds nothing changed (the stat
pass over the program's modules) and of the first one (imports included).
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

from autodbg import reload


def module_source(lines):
    """Python source of about ``lines`` lines; ``target`` returns ``VALUE``."""
    header = (
        "import functools\n\n\ndef deco(f):\n    @functools.wraps(f)\n"
        "    def w(*a):\n        return f(*a)\n\n    return w\n\n\n"
        "def target(x):\n    return x + VALUE\n\n\n"
    )
    parts = [header]
    count = 0
    while sum(part.count("\n") for part in parts) < lines:
        parts.append(
            f"def function_{count}(a, b=1, *, c=2):\n"
            f"    total = a + b + c\n"
            f"    for i in range(3):\n"
            f"        total += i * {count}\n"
            f"    return total\n\n\n"
            f"class Class_{count}:\n"
            f"    def method(self, x):\n"
            f"        return x * {count}\n\n"
            f"    @staticmethod\n"
            f"    def helper(y):\n"
            f"        return [y + k for k in range({count % 5})]\n\n\n"
            f"@deco\n"
            f"def decorated_{count}(z):\n"
            f"    return z - {count}\n\n\n"
            f"def make_{count}(k):\n"
            f"    def inner(v):\n"
            f"        return v * k\n\n"
            f"    return inner\n\n\n"
        )
        count += 1
    return "".join(parts)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    folder = tempfile.mkdtemp(prefix="adbg-reload-")
    path = os.path.join(folder, "big_module.py")
    source = module_source(2000)
    with open(path, "w") as file:
        file.write(source.replace("VALUE", "0"))
    sys.path.insert(0, folder)
    import big_module

    lines = source.count("\n")
    started = time.perf_counter()
    reload.reload()  # first look: reads the file once, imports what reload needs
    first = time.perf_counter() - started
    times = []
    for round_ in range(1, args.rounds + 1):
        with open(path, "w") as file:
            file.write(source.replace("VALUE", str(round_)))
        started = time.perf_counter()
        reports = reload.reload()
        times.append(time.perf_counter() - started)
        assert big_module.target(0) == round_, reports
        assert reports[0].text.endswith("big_module.py: target"), reports
    idle = []
    for _ in range(args.rounds):
        started = time.perf_counter()
        reload.reload()
        idle.append(time.perf_counter() - started)
    median = statistics.median(times) * 1000
    print(f"module: {lines} lines, {len(sys.modules)} modules loaded")
    print(
        f"reload, one function changed: median {median:.1f} ms, max {max(times) * 1000:.1f} ms"
        f" over {args.rounds} rounds (goal < 50 ms: {'met' if median < 50 else 'NOT met'})"
    )
    print(f"first reload (imports, file read once): {first * 1000:.1f} ms")
    print(f"reload, nothing changed: median {statistics.median(idle) * 1000:.2f} ms")


if __name__ == "__main__":
    main()
