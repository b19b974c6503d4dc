"""A 2-rank gloo job for the fault matrix; argv[1] picks what rank 1 does after a barrier.

- ``hang``: rank 1 sleeps (a hung job).
- ``thread``: rank 1's worker thread raises (a session waits there under autodbg), and rank 1
  sleeps: the job is alive until someone ends it.
- ``crash``: rank 1 raises in its main thread.

Rank 0 sleeps in every case. It stands for a rank blocked on its peer, outside a collective,
so that a signal gives it one traceback whatever the order the ranks die in (in a collective,
the peer's death adds a "Connection closed by peer" traceback, or not, by a race).
Every rank prints ``fm rank N blocked`` once it is where it stays.
"""

import sys
import threading
import time

import torch.distributed as dist


def work(rank):
    marker = 17  # a local a client may read
    raise ValueError(f"rank {rank} thread fails; marker {marker}")


def main(kind):
    dist.init_process_group("gloo")
    dist.barrier()
    rank = dist.get_rank()
    if rank == 1 and kind == "crash":
        raise RuntimeError("rank 1 fails")
    if rank == 1 and kind == "thread":
        threading.Thread(target=work, args=(rank,), name="worker").start()
    print(f"fm rank {rank} blocked", flush=True)
    time.sleep(600)


if __name__ == "__main__":
    main(sys.argv[1])
