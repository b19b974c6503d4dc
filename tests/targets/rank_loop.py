"""2 ranks: rank 1 loops in Python counting steps; rank 0 waits in all_reduce (a C call)."""
import time

import torch
import torch.distributed as dist


def train(rank):
    step = 0
    while rank == 1:
        step += 1
        if step == 1:
            print("rank 1 looping", flush=True)
        time.sleep(0.02)
    dist.all_reduce(torch.ones(1))


dist.init_process_group("gloo")
train(dist.get_rank())
