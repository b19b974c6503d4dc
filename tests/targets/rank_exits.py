"""3 ranks: rank 1 raises into a session; once its record exists, rank 2 exits with status 3
(no exception: no session of its own); rank 0 waits in all_reduce."""
import glob
import os
import sys
import time

import torch
import torch.distributed as dist

dist.init_process_group("gloo")
rank = dist.get_rank()
if rank == 1:
    marker = 11
    raise RuntimeError(f"rank 1 fails with marker {marker}")
if rank == 2:
    deadline = time.monotonic() + 60
    while not glob.glob(os.path.join(os.environ["AUTODBG_DIR"], "*", "*.json")):
        if time.monotonic() > deadline:
            sys.exit(4)
        time.sleep(0.1)
    print("rank 2 exits", flush=True)
    sys.exit(3)
dist.all_reduce(torch.ones(1))
