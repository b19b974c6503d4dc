"""Stands for a process whose session is opening: its record says "opening", as autodbg.publish
writes it first thing, and the break signal (SIGUSR2) would print "signalled".

Commands, one a line, on the FIFO argv[1]: "waiting" opens the session's socket, moves the
record to "waiting" and answers one client as a session does (the handshake, then READY);
"exit" prints "alive" and ends with status 0.
"""

import os
import signal
import socket
import sys
import time

from autodbg import config, identity, registry
from autodbg.backends.socket import READY

signal.signal(signal.SIGUSR2, lambda signum, frame: print("signalled", flush=True))
folder = registry.job_dir(registry.runtime_dir(config.current().dir), identity.current.job)
path = os.path.join(folder, f"{os.getpid()}.json")
record = {
    "pid": os.getpid(),
    **identity.current.fields(),
    "state": "opening",
    "socket": None,
    "exception": "ValueError: opening",
    "where": f"{__file__}:1 in <module>",
    "started": time.time(),
    "process_started": registry.process_started(os.getpid()),
}
registry.write(path, record)
print("opening", flush=True)
with open(sys.argv[1]) as commands:
    for line in commands:
        if line.strip() == "exit":
            break
        address = os.path.join(folder, f"{os.getpid()}.sock")
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(address)
        server.listen(1)
        registry.write(path, dict(record, state="waiting", socket=address))
        conn, _ = server.accept()
        conn.makefile("rb").readline()  # the client's handshake
        conn.sendall(READY + b"the stand-in session answered\r\n")
        conn.close()
        registry.remove(path, address)
print("alive", flush=True)
