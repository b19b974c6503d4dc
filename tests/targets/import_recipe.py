"""importlib's manual import recipe (find_spec, module_from_spec, exec_module) on a watched name.

Run with AUTODBG=1 (the post-import hook is autodbg's bootstrap). Prints the
number of times the callback ran, whether it got the module that was
executed, and which loader the module ends up with.
"""
import importlib.util
import sys

from autodbg.hooks import after_import

NAME = "colorsys"  # a small stdlib module that nothing imports at start-up
assert NAME not in sys.modules

calls = []
after_import(NAME, calls.append)
spec = importlib.util.find_spec(NAME)
assert importlib.util.find_spec(NAME) is not None  # asking twice changes nothing
module = importlib.util.module_from_spec(spec)
sys.modules[NAME] = module
spec.loader.exec_module(module)
import colorsys

print("calls", len(calls), "same module", calls == [module] and colorsys is module)
print("loader", type(module.__loader__).__name__, type(module.__spec__.loader).__name__)
print("works", module.rgb_to_hsv(1.0, 0.0, 0.0))
