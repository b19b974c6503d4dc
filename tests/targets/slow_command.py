"""2 ranks; rank 1 raises after init_process_group; rank 0 waits in all_reduce."""
import torch
import torch.distributed as dist


def fail(rank):
    pause = 30
    raise ValueError(f"rank {rank} fails; pause {pause}")


dist.init_process_group("gloo")
if dist.get_rank() == 1:
    fail(1)
dist.all_reduce(torch.ones(1))
