"""The package, tests and benchmarks are ruff-clean (check and format) and mypy-clean; no import cycles."""

import ast
import os
import subprocess

import pytest
from harness import BIN

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize(
    "command",
    [
        ["ruff", "check", "autodbg", "tests", "benchmarks"],
        ["ruff", "format", "--check", "autodbg", "tests", "benchmarks"],
        ["mypy", "autodbg"],
    ],
    ids=["ruff-check", "ruff-format", "mypy"],
)
def test_clean(command):
    tool = os.path.join(BIN, command[0])
    done = subprocess.run(
        [tool, *command[1:]], cwd=TOP, capture_output=True, text=True, timeout=110
    )
    assert done.returncode == 0, done.stdout + done.stderr


def imports(path, package):
    """The autodbg modules that the file at ``path`` imports, at its top or inside functions."""
    found = set()
    with open(path) as source:
        tree = ast.parse(source.read())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("autodbg"):
            if node.module == "autodbg":
                found.update(f"autodbg.{alias.name}" for alias in node.names)
            else:
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("autodbg"))
    return found & package


def test_no_import_cycles():
    # Lazy imports count too: a cycle through them is a tangle of roles all the same.
    folder = os.path.join(TOP, "autodbg")
    files = {}
    for parent, _, names in os.walk(folder):
        for name in names:
            if name.endswith(".py"):
                path = os.path.join(parent, name)
                module = os.path.relpath(path[:-3], TOP).replace(os.sep, ".")
                files[module.removesuffix(".__init__")] = path
    graph = {module: imports(path, set(files)) - {module} for module, path in files.items()}
    done, cycles = set(), []

    def visit(module, path):
        for other in sorted(graph[module]):
            if other in path:
                cycles.append(path[path.index(other) :] + [other])
            elif other not in done:
                visit(other, path + [other])
        done.add(module)

    for module in sorted(graph):
        if module not in done:
            visit(module, [module])
    assert cycles == [], cycles
