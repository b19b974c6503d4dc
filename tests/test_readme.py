"""The README's tables document every environment variable and CLI verb, and nothing else."""

import pathlib
import re

from autodbg import cli, config

ROOT = pathlib.Path(__file__).parent.parent
README = (ROOT / "README.md").read_text()


def table_rows(first_cell):
    return set(re.findall(rf"^\| `({first_cell})", README, re.MULTILINE))


def test_every_variable_is_in_the_table():
    documented = table_rows(r"AUTODBG\w*")
    assert documented == set(config.VARIABLES)
    in_code = set()
    for path in (ROOT / "autodbg").rglob("*.py"):
        in_code |= set(re.findall(r"\bAUTODBG(?:_[A-Z]+)*\b", path.read_text()))
    assert in_code <= set(config.VARIABLES), in_code - set(config.VARIABLES)


def test_every_verb_is_in_the_table():
    parser = cli.build_parser()
    verbs = next(a for a in parser._actions if a.dest == "verb").choices
    documented = {row.split()[1] for row in table_rows(r"autodbg \w+")}
    assert documented == set(verbs)


def test_readme_names_the_two_commands():
    assert "scripts/demo" in README and "scripts/test" in README
