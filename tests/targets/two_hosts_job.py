"""A 4-rank gloo job over two hosts: all meet in an all_reduce, then rank 3 raises IndexError
while the others block in the next all_reduce. `rank` is a local of every rank's program frame."""
import torch
import torch.distributed as dist


def step(rank, batch, index):
    scale = 7  # a local the tests read back in the failing frame
    return batch[index] * scale * rank


def main():
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    batch = [torch.ones(2)] * 2
    total = torch.ones(1)
    dist.all_reduce(total)  # every rank is up
    if rank == 3:
        step(rank, batch, 5)
    dist.all_reduce(total)  # rank 3 never comes: the others block here
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
