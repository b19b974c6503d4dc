"""A 3-rank gloo job: rank 1 (or the ranks in CRASH_RANKS) raises IndexError after init_process_group."""
import os

import torch
import torch.distributed as dist


def step(batch, index):
    scale = 7  # a local the tests read back in the failing frame
    return batch[index] * scale


def main():
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    crashing = {int(r) for r in os.environ.get("CRASH_RANKS", "1").split(",")}
    batch = [torch.ones(2)] * 3
    for i in range(3):
        index = 5 if (rank in crashing and i == 2) else i
        loss = step(batch, index)
        dist.all_reduce(loss)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
