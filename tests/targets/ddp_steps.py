"""A healthy gloo job: argv[1] steps, each a 50 ms sleep and an all_reduce; rank 0 prints a sum."""
import sys
import time

import torch
import torch.distributed as dist


def step(tensor):
    time.sleep(0.05)  # the step's work, re-entered every step: no hang
    dist.all_reduce(tensor)


def main():
    dist.init_process_group("gloo")
    total = torch.zeros(1)
    for _ in range(int(sys.argv[1])):
        one = torch.ones(1)
        step(one)
        total += one
    if dist.get_rank() == 0:
        print(f"done: {total.item():g}", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
