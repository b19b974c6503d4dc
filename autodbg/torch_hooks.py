"""Everything that knows about torch.distributed on the ranks' side.

Imported only when the program itself imports ``torch.distributed`` (through
the post-import hook in :mod:`autodbg.hooks`) or when an exception reaches
autodbg in a process that has imported it; autodbg never imports torch.
torchrun's launcher process is :mod:`autodbg.launcher`'s business.

Torch behaviour relied on (torch 2.13, ``torch/distributed/distributed_c10d.py``,
``torch/distributed/device_mesh.py`` and ``torch/distributed/__init__.py``),
each with a test in tests/test_torch_hooks.py:

* ``init_process_group`` replaces ``sys.excepthook`` with
  ``_distributed_excepthook``, which calls the previous hook with
  ``sys.stderr`` swapped for a ``StringIO`` and then prints the text with a
  ``[rankN]:`` prefix. A debugger started under it would write into the
  ``StringIO``, so autodbg puts its own hook back on top after the call.
  ``device_mesh`` imported ``init_process_group`` by name before autodbg
  saw ``torch.distributed``, so its name is rebound to the wrapper too.
* A group made with no timeout (``timeout=None``) gets the backend's default
  (30 min for gloo, 10 min for NCCL): peers of a rank in a debugger give up
  after that. ``init_process_group``, ``new_group`` (and so
  ``new_subgroups`` and ``DeviceMesh``/``init_device_mesh``) and
  ``split_group`` all turn ``None`` into that default through one module
  function, ``_get_default_timeout(backend)``, looked up at call time, and
  then check the value with ``_check_valid_timeout(timeout)``. autodbg
  replaces the first to give ``AUTODBG_PG_TIMEOUT`` instead, and watches the
  second to say once when the program's own timeout is shorter. The
  program's arguments are never touched, so a wrong one (``timeout=30``)
  gets torch's own ``TypeError``. ``monitored_barrier(timeout=None)`` asks
  the same function, so it waits as long as its group does.
* The Flight Recorder reads ``TORCH_FR_BUFFER_SIZE`` when the first
  process group is made, not at import: set right after the import, it
  applies (:mod:`autodbg.collectives`; tested in tests/test_collectives.py).
* ``torch.distributed.breakpoint()`` makes its debugger with the module's
  ``_make_distributed_pdb()`` and calls ``message()`` and ``set_trace()`` on
  it, then waits in ``barrier()``; autodbg supplies a stand-in whose
  ``set_trace()`` opens an autodbg session, so the rank is reachable over
  its socket even when torchrun filters its output.

Each replacement keeps the original's name and ``__wrapped__``
(``functools.wraps``), takes ``*args, **kwargs``, calls the original with
them, and runs autodbg's part under :func:`autodbg.guard.call`: an error
there is one ``autodbg:`` line and torch's behaviour.
"""

import datetime
import functools
import sys

from autodbg import config, guard, identity
from autodbg.hooks import adopt, excepthook
from autodbg.messages import say

_noticed: set[float] = set()  # the program's short timeouts already said, in seconds


def patch(distributed):
    """Patch the just-imported ``torch.distributed`` (see the module docstring).

    Safe to call twice. An error is one ``autodbg:`` line and leaves torch as it is.

    Args:
        distributed (types.ModuleType): the ``torch.distributed`` module.
    """
    guard.call("patching torch.distributed", _patch, distributed)


def _patch(distributed):
    from autodbg import collectives, stacks

    stacks.register()  # a rank's stack dumps go to its file too, where `autodbg stack` finds them
    guard.call("the flight recorder", collectives.enable)  # before the program makes a group
    c10d = getattr(distributed, "distributed_c10d", None)
    if c10d is None or getattr(c10d.init_process_group, "__autodbg__", False):
        return  # torch built without distributed support, or patched already
    original = c10d.init_process_group
    init_process_group = _init_process_group(original, distributed)
    c10d.init_process_group = init_process_group
    # Both imported the name while torch.distributed loaded, before autodbg saw it.
    for module in (distributed, getattr(distributed, "device_mesh", None)):
        if getattr(module, "init_process_group", None) is original:
            module.init_process_group = init_process_group
    c10d._get_default_timeout = _default_timeout(c10d._get_default_timeout)
    c10d._check_valid_timeout = _check_valid_timeout(c10d._check_valid_timeout)
    if hasattr(distributed, "_make_distributed_pdb"):
        distributed._make_distributed_pdb = _make_distributed_pdb(distributed._make_distributed_pdb)


def _init_process_group(original, distributed):
    @functools.wraps(original)
    def init_process_group(*args, **kwargs):
        try:
            return original(*args, **kwargs)
        finally:
            guard.call("init_process_group", _after_init, distributed)

    init_process_group.__autodbg__ = True
    return init_process_group


def _after_init(distributed):
    """Put autodbg's excepthook back on top of torch's and learn the rank (after ``init_process_group``)."""
    hook = sys.excepthook
    if hook is not excepthook and getattr(hook, "__name__", "") == "_distributed_excepthook":
        adopt(hook)
    # mp.spawn-style programs pass rank= to init_process_group: the environment has none.
    if distributed.is_initialized():
        me = identity.current
        if me.rank is None:
            me.rank = distributed.get_rank()
        if me.world_size is None:
            me.world_size = distributed.get_world_size()
        from autodbg import stacks

        stacks.update_identity()  # `autodbg stack` names the rank too
        guard.call("the job record", _record_job, distributed)


def _record_job(distributed):
    """Learn the default group's store; in a job without torchrun's agent, write the job record.

    The store is where this process's sessions publish
    (:func:`autodbg.store.job_address`). Under the autodbg-aware torchrun agent
    the agent wrote the node's job record already (:mod:`autodbg.launcher`);
    in an ``srun`` or ``mpirun`` job, local rank 0 (or, with no local rank
    known, the first rank of this host to get here) writes it.
    """
    from autodbg import discovery, registry, store

    address = store.learn_default(distributed.distributed_c10d)
    me = identity.current
    if address is None or config.current().launcher is not None or me.role is not None:
        return
    if me.local_rank not in (0, None):
        return
    root = registry.runtime_dir(config.current().dir)
    if discovery.job_records(root, me.job):
        return  # another rank of this host wrote it
    record = discovery.node_record(me.job, None, address, None, None)
    discovery.Announcement(record).publish()


def _default_timeout(original):
    @functools.wraps(original)
    def _get_default_timeout(*args, **kwargs):
        default = original(*args, **kwargs)  # its errors and warnings, as without autodbg
        return guard.call("the process-group timeout", _configured, otherwise=lambda: default)

    return _get_default_timeout


def _configured():
    return datetime.timedelta(seconds=config.current().pg_timeout)


def _check_valid_timeout(original):
    @functools.wraps(original)
    def _check_valid_timeout(*args, **kwargs):
        result = original(*args, **kwargs)  # torch's TypeError for a timeout that is no timedelta
        guard.call("the process-group timeout", _notice_short, sys._getframe(1), args, kwargs)
        return result

    return _check_valid_timeout


def _notice_short(caller, args, kwargs):
    if caller.f_code.co_name == "monitored_barrier":
        return  # the timeout of one barrier, not of a group
    seconds = (args[0] if args else kwargs["timeout"]).total_seconds()
    if seconds >= config.current().pg_timeout or seconds in _noticed:
        return
    _noticed.add(seconds)
    say(
        f"the program sets a process-group timeout of {seconds:g} s: a debugger session "
        "longer than that gets cut short when the other ranks time out "
        "(AUTODBG_PG_TIMEOUT applies only when the program sets none)"
    )


def _make_distributed_pdb(original):
    @functools.wraps(original)
    def _make_distributed_pdb(*args, **kwargs):
        return _BreakpointDebugger(functools.partial(original, *args, **kwargs))

    return _make_distributed_pdb


class _BreakpointDebugger:
    """Stands in for the pdb that ``torch.distributed.breakpoint()`` makes: ``message`` and ``set_trace``.

    Args:
        make_torch_debugger (Callable[[], pdb.Pdb]): torch's ``_make_distributed_pdb``
            with its arguments, for when autodbg's session cannot open.
    """

    def __init__(self, make_torch_debugger):
        self._make_torch_debugger = make_torch_debugger
        self._messages = []

    def message(self, text):
        """Keep ``text`` for torch's own debugger, if autodbg's session cannot open.

        torch's text is its "Type 'up' to get to the frame that called
        dist.breakpoint" hint, which autodbg's session, opened at that frame
        already, does not need.
        """
        self._messages.append(text)

    def set_trace(self, frame=None, *args, **kwargs):
        """Open an autodbg session at the line that called ``torch.distributed.breakpoint()``.

        ``frame`` (default: the caller, torch's ``breakpoint()``) is torch's
        frame: the prompt opens at once in the frame that called it, before
        torch's ``barrier()``, where the other ranks wait; ``n`` there lets
        the barrier run and stops at the caller's next line (``c``: no stop).
        torch's own pdb stops inside ``torch/distributed/__init__.py``.
        Blocks as :func:`autodbg.session.set_trace` does. If autodbg fails,
        one ``autodbg:`` line, then torch's own debugger, as without autodbg.
        """
        frame = frame or sys._getframe(1)
        guard.call(
            "torch.distributed.breakpoint()",
            self._session,
            frame,
            otherwise=lambda: self._torch_set_trace(frame, *args, **kwargs),
        )

    def _session(self, frame):
        from autodbg import session

        caller = frame.f_back
        if caller is None or frame.f_globals.get("__name__") != "torch.distributed":
            session.set_trace(frame, intro="\n".join(self._messages))  # not torch's frame
            return
        session.set_trace(
            caller,
            intro="autodbg: torch.distributed.breakpoint(): the other ranks wait in its barrier "
            "until this session lets it run: `n` runs it and stops at your next line",
            in_call=True,
        )

    def _torch_set_trace(self, frame, *args, **kwargs):
        debugger = self._make_torch_debugger()
        for text in self._messages:
            debugger.message(text)
        debugger.set_trace(frame, *args, **kwargs)
