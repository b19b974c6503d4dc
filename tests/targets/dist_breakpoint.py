"""2 ranks: torch.distributed.breakpoint(rank=1), then an all_reduce; prints the sum on rank 0."""
import torch
import torch.distributed as dist

dist.init_process_group("gloo")
value = torch.ones(1) * (dist.get_rank() + 1)
dist.breakpoint(rank=1)
dist.all_reduce(value)
print(f"rank {dist.get_rank()} sum {value.item():g}", flush=True)
dist.destroy_process_group()
