"""A gloo job whose ranks all raise ValueError at once, after a barrier (exit status 1 each)."""
import torch.distributed as dist

dist.init_process_group("gloo")
rank = dist.get_rank()
dist.barrier()
raise ValueError(f"rank {rank} fails")
