"""A 3-rank gloo job for the dashboard: ranks 1 and 2 raise in f(), whose local `marker`
names the rank; rank 0 waits for them in all_reduce (held by autodbg's process-group timeout)."""
import torch
import torch.distributed as dist


def f(rank):
    marker = f"marker-of-rank-{rank}"
    raise RuntimeError(marker)


dist.init_process_group("gloo")
rank = dist.get_rank()
if rank in (1, 2):
    f(rank)
dist.all_reduce(torch.ones(1))
