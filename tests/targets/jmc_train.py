"""A torch training loop under torchrun (gloo) whose batch has the wrong shape on its last step.

The program's line ``model(batch)`` calls into ``torch.nn``, which raises: a
session opens there, with torch's frames below it.
"""

import torch
import torch.distributed as dist


def train(model, optimizer, steps):
    for step in range(steps):
        width = 3 if step == steps - 1 else 4  # the last batch has the wrong shape
        batch = torch.ones(2, width)
        loss = model(batch).sum()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()


def main():
    dist.init_process_group("gloo")
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    train(model, torch.optim.SGD(model.parameters(), lr=0.1), steps=3)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
