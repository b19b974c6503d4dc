"""Drops to uid/gid argv[1]/argv[2] after loading what a session needs, then crashes.

The interpreter and autodbg may live where that user cannot read (a root-only
checkout), so every module the session will use is imported before dropping.
"""
import os
import sys

import pdb  # noqa: F401  (AUTODBG_DEBUGGER=pdb)
import readline  # noqa: F401  (pdb imports it when it starts)

import psutil  # noqa: F401

import autodbg.crashes  # noqa: F401
import autodbg.debugger  # noqa: F401
import autodbg.ptrace  # noqa: F401
import autodbg.session  # noqa: F401
import autodbg.triage  # noqa: F401

os.setgroups([])
os.setgid(int(sys.argv[2]))
os.setuid(int(sys.argv[1]))


def f():
    secret = 42
    return secret / 0


f()
