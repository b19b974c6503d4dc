"""A small data-parallel training job (DDP over gloo, on CPU) in which rank 1 fails at step 5.

Rank 1's data shard is three batches short, so ``shard[step]`` raises
IndexError at step 5 while ranks 0 and 2 wait for it in the backward pass's
all-reduce. Run it as ``AUTODBG=1 torchrun --standalone --nproc_per_node=3 examples/train.py``.
"""

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

STEPS = 8
BATCH = 16


def make_shard(rank, steps):
    """Return this rank's batches: a list of (inputs [BATCH, 8], targets [BATCH, 1])."""
    generator = torch.Generator().manual_seed(rank)
    count = steps - 3 if rank == 1 else steps  # the bug: rank 1 gets a short shard
    return [(torch.randn(BATCH, 8, generator=generator), torch.randn(BATCH, 1, generator=generator)) for _ in range(count)]


def train(model, shard, optimizer, steps):
    for step in range(steps):
        inputs, targets = shard[step]
        loss = nn.functional.mse_loss(model(inputs), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if dist.get_rank() == 0:
            print(f"step {step}: loss {loss.item():.4f}", flush=True)


def main():
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(0)
    model = DistributedDataParallel(nn.Linear(8, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    train(model, make_shard(rank, STEPS), optimizer, STEPS)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
