"""Every kind of process group in one gloo process (world size 1): the timeout torch recorded.

The default group comes from init_device_mesh (device_mesh calls its own
import of init_process_group), the mesh's dimension group from new_group (a
backend override makes DeviceMesh create one), then new_group() with no
timeout and with an explicit 600 s. Prints ``<group> <seconds>`` per group and
which excepthook is on top after device_mesh's init_process_group.
"""
import datetime
import os
import socket
import sys

with socket.socket() as probe:
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK="0", WORLD_SIZE="1")

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh


def timeout(group):
    return group._get_backend(torch.device("cpu")).options._timeout.total_seconds()


mesh = init_device_mesh("cpu", (1,), mesh_dim_names=("dp",), backend_override={"dp": "gloo"})
default = dist.distributed_c10d._get_default_group()
assert mesh.get_group("dp") is not default  # the override made DeviceMesh call new_group
print(f"default {timeout(default):g}")
print(f"mesh {timeout(mesh.get_group('dp')):g}")
print(f"new_group {timeout(dist.new_group([0])):g}")
print(f"explicit {timeout(dist.new_group([0], timeout=datetime.timedelta(seconds=600))):g}")
print(f"excepthook {sys.excepthook.__module__}.{sys.excepthook.__name__}", flush=True)
dist.destroy_process_group()
