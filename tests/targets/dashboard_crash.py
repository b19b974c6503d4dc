"""One rank of a dashboard test: crashes in f(), whose local `marker` names its rank.

It registers for stack dumps itself (``import torch.distributed`` makes a rank do that), so
that `stack --all` and `cast` see it as a rank without a torch import.
"""

import os

import autodbg.stacks


def f(rank):
    marker = f"marker-of-rank-{rank}"
    raise RuntimeError(marker)


autodbg.stacks.register()
f(int(os.environ["RANK"]))
