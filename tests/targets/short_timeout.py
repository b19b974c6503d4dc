"""2 ranks with a 5 s process-group timeout: rank 1 raises into a session, rank 0 times out in all_reduce."""
import datetime

import torch
import torch.distributed as dist

dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=5))
if dist.get_rank() == 1:
    raise ValueError("rank 1 is the real bug")
dist.all_reduce(torch.ones(1))
