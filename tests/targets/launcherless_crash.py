"""A rank started without torchrun, as srun or mpirun would: rank from RANK or SLURM_PROCID, group from INIT_METHOD.

Rank 1 raises IndexError after init_process_group; the others wait in all_reduce.
"""

import os

import torch
import torch.distributed as dist


def main():
    env = os.environ
    rank = int(env.get("RANK", env.get("SLURM_PROCID", "0")))
    world = int(env.get("WORLD_SIZE", env.get("SLURM_NTASKS", "1")))
    dist.init_process_group(
        "gloo", init_method=os.environ.get("INIT_METHOD", "env://"), rank=rank, world_size=world
    )
    batch = [torch.ones(2)] * 2
    loss = batch[5 if rank == 1 else 0]
    dist.all_reduce(loss)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
