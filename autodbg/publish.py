"""A session's record: in the job folder of the runtime directory, and in the job's store.

The record (DESIGN.md, contract 7) is what ``autodbg ls`` lists, what
``autodbg attach`` and torchrun's launcher find a session by, and what tells
the CLI that a process is in a session, so that it never sends a break signal
to it. A session publishes it first thing, in state ``opening``, before it
writes its crash record or opens its socket; then ``waiting`` (for a socket
client) or ``attached``. In a multi-node job the record also goes to the
job's c10d store (:mod:`autodbg.store`), for the other nodes.
"""

import os
import sys

from autodbg import identity, registry
from autodbg.messages import say


class Publication:
    """Writes and withdraws one session's record.

    Args:
        path (str): the record's file, ``<job folder>/<pid>.json``.
        fields (dict): the session's own fields (``exception``, ``where``,
            ``started``, ``reason``, ``thread``); the rest comes from this process.
    """

    def __init__(self, path, fields):
        self.path = path
        self._fields = fields
        self._store = None  # None: not tried; False: failed once, said so once

    def publish(self, state, server=None):
        """Write the record with ``state`` (``opening``, ``waiting``, ``attached``); never raises.

        Args:
            state (str): the session's state.
            server (autodbg.backends.socket.Server | None): the session's socket, once open.
        """
        ident = identity.current
        record = {
            "pid": os.getpid(),
            **ident.fields(),
            "state": state,
            "socket": None if server is None else server.path,
            **self._fields,
            "argv": list(sys.argv),
            "process_started": registry.process_started(os.getpid()),
        }
        tcp = None if server is None else server.tcp_address
        if tcp is not None:
            # A wildcard address is every interface: the other hosts know this one by its name.
            host = ident.host if tcp[0] in ("0.0.0.0", "::", "") else tcp[0]
            record["tcp"] = f"[{host}]:{tcp[1]}" if ":" in host else f"{host}:{tcp[1]}"
        try:
            registry.write(self.path, record)
        except OSError as error:
            say(f"cannot write the session record {self.path}: {error.strerror}")
        # A DAP session has no socket, but its address is for the other nodes too.
        if (server is not None or "dap" in self._fields) and "torch.distributed" in sys.modules:
            from autodbg import store

            if store.job_address():  # torchrun's, or the default process group's (srun, mpirun)
                self._publish_in_store(record)

    def withdraw(self):
        """Remove the record here and in the store; never raises."""
        registry.remove(self.path)
        if self._store:
            try:
                self._store.withdraw()
            except Exception:
                pass  # the store went away with the job

    def _publish_in_store(self, record):
        from autodbg import store

        if self._store is False:
            return
        try:
            if self._store is None:
                self._store = store.Publication(store.connect(store.job_address()))
            self._store.write(record)
        except Exception as error:  # the job's store is the job's: never fail the session for it
            say(
                f"cannot publish the session in the job's store ({error}); other nodes will not see it"
            )
            self._store = False
