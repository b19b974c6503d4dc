"""Run trace_fixture's functions, traced by AUTODBG_TRACE or, with --pysnooper/--snoop, by their decorators.

argv: [--pysnooper FILE | --snoop FILE] function args...: calls trace_fixture.<function>(*args) and prints the result.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import trace_fixture

args = sys.argv[1:]
if args[0] == "--pysnooper":
    import pysnooper

    output, args = args[1], args[2:]
    setattr(trace_fixture, args[0], pysnooper.snoop(output)(getattr(trace_fixture, args[0])))
name, *values = args
print(getattr(trace_fixture, name)(*(int(value) for value in values)))
