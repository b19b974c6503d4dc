"""Start-up: the .pth costs nothing when off and imports only light modules when on."""

import subprocess

import pytest
from conftest import PYTHON

HEAVY = {
    "torch",
    "IPython",
    "ipdb",
    "psutil",
    "asyncio",
    "socket",
    "threading",
    "json",
    "prompt_toolkit",
}
SHOW_MODULES = "import sys; print(' '.join(sorted(sys.modules)))"


def modules(env, then=""):
    """Return the modules loaded when the program starts (before ``then``, more code) and its stderr."""
    code = f"{SHOW_MODULES}; {then}" if then else SHOW_MODULES
    out = subprocess.run(
        [PYTHON, "-c", code], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stderr
    return set(out.stdout.splitlines()[0].split()), out.stderr


@pytest.mark.parametrize("value", [None, "", "0", "false", "off", "no", "OFF"])
def test_off_imports_no_autodbg_module(env, value):
    env.pop("AUTODBG")
    if value is not None:
        env["AUTODBG"] = value
    loaded, stderr = modules(env)
    assert not {m for m in loaded if m.startswith("autodbg")}
    assert stderr == ""


# What AUTODBG=1 adds to the modules of a program that imports nothing (benchmarks/startup.py
# measures what each costs): the package, three modules of its own, and one built-in.
STARTUP = {"autodbg", "autodbg.config", "autodbg.hooks", "faulthandler"}


@pytest.mark.parametrize("value", ["1", "true", "YES", " on "])
def test_on_imports_only_light_modules(env, value):
    env.pop("AUTODBG")
    off, _ = modules(env)
    env["AUTODBG"] = value
    loaded, stderr = modules(env)
    assert loaded - off == STARTUP
    assert not {m.split(".")[0] for m in loaded} & HEAVY
    assert stderr == ""


def test_startup_reads_seven_settings_and_makes_no_class(env):
    # What keeps start-up short besides its modules (autodbg.config's docstring says why).
    code = "from autodbg import config; print(sorted(config._settings), config._config_class)"
    out = subprocess.run(
        [PYTHON, "-c", code], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert out.stdout.split("\n")[:1] == [
        "['break_signal', 'catch', 'hang', 'mode', 'reload', 'stack_signal', 'trace'] None"
    ], out.stderr


@pytest.mark.parametrize(
    "variable, value, allowed, setting, at_startup",
    [
        ("AUTODBG_MODE", "sockets", "auto, console, socket, web, dap, off", "mode", True),
        ("AUTODBG_STACK_SIGNAL", "SIGNOPE", "a signal name", "stack_signal", True),
        ("AUTODBG_BREAK_SIGNAL", "KILL", "a signal name", "break_signal", True),
        ("AUTODBG_HANG", "soon", "a number of seconds > 0", "hang", True),
        ("AUTODBG_WAIT", "ten", "a number of seconds", "wait", False),
        ("AUTODBG_WAIT", "-3", "a number of seconds", "wait", False),
        ("AUTODBG_DEBUGGER", "gdb", "ipdb or pdb", "debugger", False),
    ],
)
def test_bad_value_is_one_warning_line(env, variable, value, allowed, setting, at_startup):
    """One line at the setting's first use: at start-up for the four that start-up uses."""
    env[variable] = value
    loaded, stderr = modules(env)
    assert "autodbg.hooks" in loaded  # autodbg still runs, with the default
    assert len(stderr.splitlines()) == at_startup, stderr
    use = f"from autodbg import config; config.current().{setting}; print(config.current())"
    loaded, stderr = modules(env, use)
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr  # the value is read once, however often it is used
    assert lines[0].startswith(f"autodbg: {variable}={value!r} is not valid")
    assert allowed in lines[0] and "using the default" in lines[0]


def test_bad_values_fall_back_to_defaults():
    from autodbg import config

    warnings = []
    cfg = config.load(
        {
            "AUTODBG_MODE": "x",
            "AUTODBG_WAIT": "nan",
            "AUTODBG_STACK_SIGNAL": "9",
            "AUTODBG_DEBUGGER": "x",
        },
        warn=warnings.append,
    )
    assert (cfg.mode, cfg.wait, cfg.debugger) == ("auto", config.DEFAULT_WAIT, None)
    assert cfg.stack_signal == __import__("signal").SIGUSR1
    assert len(warnings) == 4


def test_good_values():
    import signal

    from autodbg import config

    cfg = config.load(
        {
            "AUTODBG_MODE": "Socket",
            "AUTODBG_WAIT": "2.5",
            "AUTODBG_STACK_SIGNAL": "usr2",
            "AUTODBG_DEBUGGER": "pdb",
        },
        warn=pytest.fail,
    )
    assert (cfg.mode, cfg.wait, cfg.stack_signal, cfg.debugger) == (
        "socket",
        2.5,
        signal.SIGUSR2,
        "pdb",
    )
    assert config.load({"AUTODBG_STACK_SIGNAL": "off"}, warn=pytest.fail).stack_signal is None


def test_pth_line_and_config_agree_on_true_values():
    import pathlib

    from autodbg import config

    line = (pathlib.Path(__file__).parent.parent / "autodbg.pth").read_text()
    assert line.count("\n") == 1 and line.startswith("import os;")
    assert repr(config.TRUE) in line


def test_identity_from_launchers():
    from autodbg import identity

    torchrun = identity.from_env(
        {"RANK": "3", "LOCAL_RANK": "1", "WORLD_SIZE": "4", "TORCHELASTIC_RUN_ID": "abc"}
    )
    assert (torchrun.rank, torchrun.local_rank, torchrun.world_size, torchrun.job) == (
        3,
        1,
        4,
        "abc",
    )
    slurm = identity.from_env(
        {"SLURM_PROCID": "5", "SLURM_LOCALID": "0", "SLURM_NTASKS": "8", "SLURM_JOB_ID": "77"}
    )
    assert (slurm.rank, slurm.world_size, slurm.job) == (5, 8, "77")
    ompi = identity.from_env({"OMPI_COMM_WORLD_RANK": "2", "OMPI_COMM_WORLD_SIZE": "4"})
    assert (ompi.rank, ompi.world_size) == (2, 4)
    mpich = identity.from_env({"PMI_RANK": "1", "PMI_SIZE": "2", "AUTODBG_JOB": "j1"})
    assert (mpich.rank, mpich.world_size, mpich.job) == (1, 2, "j1")
    plain = identity.from_env({})
    assert plain.rank is None and plain.label() == "" and plain.job.startswith("pg")
    assert (
        identity.from_env({"RANK": "0", "TORCHELASTIC_RUN_ID": "none", "AUTODBG_JOB": "x/../y"}).job
        == "x_.._y"
    )
