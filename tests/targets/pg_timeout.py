"""One process, rank passed to init_process_group (no RANK in the environment, as with mp.spawn).

argv[1]: the timeout in seconds to pass, or "none". Prints the default group's
effective timeout, then raises so that the session's record shows the rank.
"""
import datetime
import sys

import torch
import torch.distributed as dist

timeout = None if sys.argv[1] == "none" else datetime.timedelta(seconds=float(sys.argv[1]))
kwargs = {} if timeout is None else {"timeout": timeout}
store = dist.HashStore()
dist.init_process_group("gloo", store=store, rank=0, world_size=1, **kwargs)
backend = dist.distributed_c10d._get_default_group()._get_backend(torch.device("cpu"))
print(f"effective timeout {backend.options._timeout.total_seconds():g}", flush=True)
raise KeyError("after init")
