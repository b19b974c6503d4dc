"""3 ranks that hang until released: rank 1 loops in Python, ranks 0 and 2 wait in all_reduce.

The release is a file (argv[1]): when it exists, rank 1 joins the all_reduce and every rank
prints what it saw and what autodbg left in it (threads, trace function), then exits 0.
"""
import os
import sys
import threading

import torch
import torch.distributed as dist

RELEASE = sys.argv[1]


def spin(rank):
    step = 0
    while not os.path.exists(RELEASE):
        step += 1
        if step == 1:
            print(f"rank {rank} looping", flush=True)
        sum(range(200))  # Python work between looks at the file
    return step


def main():
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    step = 0
    print(f"rank {rank} pid {os.getpid()} ready", flush=True)
    if rank == 1:
        step = spin(rank)
    dist.all_reduce(torch.ones(1))
    threads = sorted(t.name for t in threading.enumerate())
    print(f"rank {rank} done: step {step} threads {threads} trace {sys.gettrace()}", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
