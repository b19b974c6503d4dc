"""``python -m autodbg``: the same command line as ``autodbg``."""

from autodbg.cli import main

raise SystemExit(main())
