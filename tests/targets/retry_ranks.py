"""A 2-rank gloo job whose rank 1 fails in ``local_loss`` (AUTODBG_CATCH=__main__:local_loss) before an all_reduce."""

import torch
import torch.distributed as dist


def local_loss(rank):
    if rank == 1:
        raise RuntimeError("rank 1 cannot compute its loss")  # FIX
    return float(rank)


dist.init_process_group("gloo")
rank = dist.get_rank()
value = torch.tensor([local_loss(rank)])
dist.all_reduce(value)
print(f"rank {rank} total {value.item()}", flush=True)
dist.destroy_process_group()
