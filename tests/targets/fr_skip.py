"""A 3-rank gloo job where rank 2 skips the second all_reduce: it waits forever elsewhere, or broadcasts.

Usage: fr_skip.py sleep|broadcast
"""

import os
import sys
import threading

import torch
import torch.distributed as dist


def elsewhere():
    threading.Event().wait()  # rank 2 never comes to the second all_reduce


def step(tensor):
    dist.all_reduce(tensor)  # ranks 0 and 1 wait here for rank 2


def main():
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    tensor = torch.ones(4)
    step(tensor)  # the first one: every rank
    print(f"rank {rank} pid {os.getpid()} ready", flush=True)
    if rank == 2:
        if sys.argv[1] == "broadcast":
            dist.broadcast(tensor, src=0)
        elsewhere()
    step(tensor)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
