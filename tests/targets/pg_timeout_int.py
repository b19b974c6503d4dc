"""init_process_group(timeout=30): an int where torch wants a timedelta (a common mistake).

Prints the exception it raised and the function that raised it, then ends
normally, so that runs with and without autodbg can be compared line by line.
"""
import traceback

import torch.distributed as dist

try:
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1, timeout=30)
except Exception as error:  # noqa: BLE001 (whatever it is, printed for comparison)
    raised_in = traceback.extract_tb(error.__traceback__)[-1]
    print(f"{type(error).__module__}.{type(error).__qualname__}: {error}")
    print(f"raised in {raised_in.name} ({raised_in.filename.rpartition('/torch/')[2]})")
print("initialized:", dist.is_initialized(), flush=True)
