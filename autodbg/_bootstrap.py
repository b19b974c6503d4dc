"""Start-up path, imported by the one line of ``autodbg.pth`` when ``AUTODBG`` is true.

Installs the hooks and exports ``AUTODBG_JOB`` so that child processes join
this process's job (see :mod:`autodbg.identity`; a launcher's job id, when
there is one, still comes first). Only ``config`` and ``hooks`` load here:
every module costs a few hundred microseconds of start-up on a slow disk. Never raises: an error becomes one ``autodbg:`` line and
Python goes on as if autodbg were not installed.
"""


def _start():
    import os

    from autodbg import config, hooks

    os.environ.setdefault("AUTODBG_JOB", f"pg{os.getpgrp()}")
    hooks.install(config.current())


try:
    _start()
except Exception as error:  # never break the user's interpreter start-up
    import sys

    sys.stderr.write(f"autodbg: not installed: {type(error).__name__}: {error}\n")
