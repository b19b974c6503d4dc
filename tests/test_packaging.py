"""The installed package, not the checkout: regular and editable installs into fresh venvs."""

import os
import subprocess

import pytest
from conftest import PYTHON

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHOW = "import sys; print(' '.join(sorted(m for m in sys.modules if m.startswith('autodbg'))))"


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("editable", [False, True], ids=["regular", "editable"])
def test_pth_lands_in_site_packages(tmp_path, editable):
    venv = tmp_path / "venv"
    subprocess.run([PYTHON, "-m", "venv", str(venv)], check=True, timeout=120)
    python = str(venv / "bin" / "python")
    install = (
        [python, "-m", "pip", "install", "-q", "--no-deps"] + (["-e"] if editable else []) + [REPO]
    )
    subprocess.run(install, check=True, timeout=240, cwd=tmp_path)
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.strip()
    assert os.path.isfile(os.path.join(site, "autodbg.pth"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTODBG")}
    # From a directory that is not the checkout, so only site-packages can provide autodbg.
    off = subprocess.run(
        [python, "-c", SHOW], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert off.stdout.strip() == "" and off.stderr == ""
    on = subprocess.run(
        [python, "-c", SHOW],
        env=dict(env, AUTODBG="1"),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "autodbg.hooks" in on.stdout.split(), on.stderr
    assert on.stderr == ""
