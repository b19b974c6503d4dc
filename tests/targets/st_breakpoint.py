"""2 ranks: rank 1 stops at a breakpoint() in pause_here(); rank 0 waits in a barrier for it."""

import torch.distributed as dist


def pause_here(step):
    marker = step * 3
    breakpoint()
    marker += 1
    return marker


def main():
    dist.init_process_group("gloo")
    if dist.get_rank() == 1:
        pause_here(4)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
