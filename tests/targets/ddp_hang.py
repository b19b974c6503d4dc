"""A 4-rank gloo job that hangs: rank 1 sleeps in Python while the others wait in all_reduce."""
import os
import time

import torch
import torch.distributed as dist


def slow_step():
    time.sleep(600)  # rank 1 is elsewhere


def sync(tensor):
    dist.all_reduce(tensor)  # ranks 0, 2, 3 wait here for rank 1


def main():
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    print(f"rank {rank} pid {os.getpid()} ready", flush=True)
    if rank == 1:
        slow_step()
    sync(torch.ones(2))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
