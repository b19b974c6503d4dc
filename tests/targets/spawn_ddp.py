"""An mp.spawn DDP-style job of 3 processes (rank passed to init_process_group, no RANK in the
environment); rank 1 raises after init_process_group while ranks 0 and 2 wait in all_reduce.
argv[1]: a free TCP port for the rendezvous."""
import sys

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def worker(rank, port):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=3)
    if rank == 1:
        shard = [1, 2]
        shard[rank + 4]
    dist.all_reduce(torch.ones(1))


if __name__ == "__main__":
    mp.spawn(worker, args=(int(sys.argv[1]),), nprocs=3)
