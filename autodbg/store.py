"""Session records in the job's c10d store, so that other nodes can find them.

torchrun hosts a ``TCPStore`` at ``MASTER_ADDR:MASTER_PORT`` for its job; any
process may join it as a client without disturbing the job
(``torch.distributed.TCPStore(host, port, is_master=False)``). A session of
a multi-node job writes its record there under ``autodbg/session/<n>``,
``n`` taken from the counter ``autodbg/sessions`` (``TCPStore.add``), and
deletes it when it ends; ``autodbg ls`` and ``attach`` read them back.

The store is a key-value map without listing, hence the counter. Imports
torch, so only processes that already imported it (a rank) or that were
asked to read a store (the CLI) load this module.
"""

import datetime
import json
import socket

COUNTER = "autodbg/sessions"
CONNECT_TIMEOUT = 5.0  # seconds


class StoreError(Exception):
    """The store cannot be reached; the message is one line for the user."""


def connect(address):
    """Join the store at ``address`` as a client.

    Blocks up to :data:`CONNECT_TIMEOUT` seconds.

    Args:
        address (str): ``HOST:PORT``.

    Returns:
        torch.distributed.TCPStore: the client.

    Raises:
        StoreError: bad address, or nothing answers there.
    """
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise StoreError(f"store address {address!r} is not HOST:PORT")
    # A plain connect first: TCPStore's own failure prints pages of C++ frames.
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT).close()
    except OSError as error:
        raise StoreError(
            f"cannot reach the store at {address}: {error.strerror or error}"
        ) from None
    import torch.distributed as dist

    try:
        return dist.TCPStore(
            host, int(port), is_master=False, timeout=datetime.timedelta(seconds=CONNECT_TIMEOUT)
        )
    except Exception as error:
        raise StoreError(f"cannot join the store at {address}: {error}") from None


class Publication:
    """One session's record in the store: written, rewritten on each change, deleted at the end.

    Args:
        store (torch.distributed.Store): the job's store.
    """

    def __init__(self, store):
        self._store = store
        self._key = f"autodbg/session/{store.add(COUNTER, 1)}"

    def write(self, record):
        """Store ``record`` (a dict) as JSON under this session's key."""
        self._store.set(self._key, json.dumps(record))

    def withdraw(self):
        """Delete this session's key."""
        self._store.delete_key(self._key)


def records(store):
    """Return every session record published in ``store``.

    Args:
        store (torch.distributed.Store): a client of the job's store.

    Returns:
        list[dict]: the records, in publication order.
    """
    found = []
    for n in range(1, store.add(COUNTER, 0) + 1):
        key = f"autodbg/session/{n}"
        if store.check([key]):  # get() would block until the key exists
            try:
                found.append(json.loads(store.get(key)))
            except ValueError:
                continue
    return found
