"""Everything that knows about torch.distributed on the ranks' side.

Imported only when the program itself imports ``torch.distributed`` (through
the post-import hook in :mod:`autodbg.hooks`) or when an exception reaches
autodbg in a process that has imported it; autodbg never imports torch.
torchrun's launcher process is :mod:`autodbg.launcher`'s business.

Torch behaviour relied on (torch 2.13, ``torch/distributed/distributed_c10d.py``
and ``torch/distributed/__init__.py``), each with a test in tests/test_torch_hooks.py:

* ``init_process_group`` replaces ``sys.excepthook`` with
  ``_distributed_excepthook``, which calls the previous hook with
  ``sys.stderr`` swapped for a ``StringIO`` and then prints the text with a
  ``[rankN]:`` prefix. A debugger started under it would write into the
  ``StringIO``, so autodbg puts its own hook back on top after the call.
* ``init_process_group(timeout=None)`` means the backend's default (30 min
  for gloo, 10 min for NCCL): peers of a rank in a debugger give up after
  that, so autodbg passes ``AUTODBG_PG_TIMEOUT`` instead.
* ``torch.distributed.breakpoint()`` makes its debugger with the module's
  ``_make_distributed_pdb()`` and calls ``message()`` and ``set_trace()`` on
  it, then waits in ``barrier()``; autodbg supplies a stand-in whose
  ``set_trace()`` opens an autodbg session, so the rank is reachable over
  its socket even when torchrun filters its output.
"""

import datetime
import functools
import sys

from autodbg import config, identity
from autodbg.hooks import adopt, excepthook
from autodbg.messages import say


def patch(distributed):
    """Wrap ``init_process_group`` and ``breakpoint()`` of the just-imported ``torch.distributed``.

    Args:
        distributed (types.ModuleType): the ``torch.distributed`` module.
    """
    from autodbg import stacks

    stacks.register()  # a rank's stack dumps go to its file too, where `autodbg stack` finds them
    c10d = getattr(distributed, "distributed_c10d", None)
    if c10d is None or getattr(c10d.init_process_group, "__autodbg__", False):
        return  # torch built without distributed support, or patched already
    import inspect

    original = c10d.init_process_group
    signature = inspect.signature(original)  # once: binding against it costs ~30 us, making it ~200

    @functools.wraps(original)
    def init_process_group(*args, **kwargs):
        args, kwargs = _with_timeout(signature, args, kwargs)
        try:
            return original(*args, **kwargs)
        finally:
            _reclaim_excepthook()
            _learn_identity(distributed)

    init_process_group.__autodbg__ = True
    c10d.init_process_group = init_process_group
    if getattr(distributed, "init_process_group", None) is original:
        distributed.init_process_group = init_process_group
    if hasattr(distributed, "_make_distributed_pdb"):
        distributed._make_distributed_pdb = _BreakpointDebugger


def _with_timeout(signature, args, kwargs):
    bound = signature.bind_partial(*args, **kwargs)
    timeout = bound.arguments.get("timeout")
    if timeout is not None:
        seconds = timeout.total_seconds()
        if seconds < config.current().pg_timeout:
            say(
                f"the program sets a process-group timeout of {seconds:g} s: a debugger session "
                "longer than that gets cut short when the other ranks time out "
                "(AUTODBG_PG_TIMEOUT applies only when the program sets none)"
            )
        return args, kwargs
    bound.arguments["timeout"] = datetime.timedelta(seconds=config.current().pg_timeout)
    return bound.args, bound.kwargs


def _reclaim_excepthook():
    hook = sys.excepthook
    if hook is not excepthook and getattr(hook, "__name__", "") == "_distributed_excepthook":
        adopt(hook)


def _learn_identity(distributed):
    # mp.spawn-style programs pass rank= to init_process_group: the environment has none.
    if distributed.is_initialized():
        me = identity.current
        if me.rank is None:
            me.rank = distributed.get_rank()
        if me.world_size is None:
            me.world_size = distributed.get_world_size()
        from autodbg import stacks

        stacks.update_identity()  # `autodbg stack` names the rank too


class _BreakpointDebugger:
    """Stands in for the pdb that ``torch.distributed.breakpoint()`` makes: ``message`` and ``set_trace``."""

    def __init__(self):
        self._messages = []

    def message(self, text):
        """Keep ``text`` for the session's client (torch's "Type 'up' ..." hint)."""
        self._messages.append(text)

    def set_trace(self, frame=None):
        """Open an autodbg session stopped in ``frame`` (default: the caller, torch's breakpoint())."""
        from autodbg import session

        session.set_trace(frame or sys._getframe(1), intro="\n".join(self._messages))
