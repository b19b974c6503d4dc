"""torch.multiprocessing.spawn with two processes; process 1 raises IndexError in work()."""

import torch.multiprocessing as mp


def work(index, size):
    values = list(range(size))  # a local the tests read back in the failing frame
    return values[size + index] if index == 1 else values[index]


if __name__ == "__main__":
    mp.spawn(work, args=(3,), nprocs=2)
    print("parent: all done", flush=True)
