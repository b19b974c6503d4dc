"""Session records in the job's c10d store, so that other nodes can find them.

torchrun hosts a ``TCPStore`` at ``MASTER_ADDR:MASTER_PORT`` for its job; any
process may join it as a client without disturbing the job
(``torch.distributed.TCPStore(host, port, is_master=False)``). A session of
a job with a store writes its record there under ``autodbg/session/<n>``,
``n`` taken from the counter ``autodbg/sessions`` (``TCPStore.add``), and
deletes it when it ends; ``autodbg ls`` and ``attach`` read them back.
Which store is the job's: :func:`job_address` (and, for the CLI,
:mod:`autodbg.discovery`).

The store is a key-value map without listing, hence the counter. Joining
one imports torch, which only processes that already imported it (a rank,
torchrun) or that were asked to read a store (the CLI) do.
"""

import datetime
import json
import socket
import sys

COUNTER = "autodbg/sessions"
CONNECT_TIMEOUT = 5.0  # seconds
# Keys read at most under one counter, the newest: anyone who reaches the store may set
# a counter to a billion, and one check() a key would then take hours.
MAX_KEYS = 4096


_default_store = None  # the default process group's store, "HOST:PORT", once it exists


class StoreError(Exception):
    """The store cannot be reached; the message is one line for the user."""


def job_address():
    """Return the store this process's sessions publish in, ``HOST:PORT``, or None.

    The default process group's ``TCPStore`` once ``init_process_group`` made
    it (:func:`learn_default`): so a job started by ``srun`` or ``mpirun``,
    with ``init_method="env://"`` or ``"tcp://HOST:PORT"``, is found through
    the store its ranks share. Before that, or for a group whose store is no
    ``TCPStore``, torchrun's ``MASTER_ADDR:MASTER_PORT``.
    """
    from autodbg import identity

    return _default_store or identity.store_address()


def learn_default(c10d):
    """Note the address of the default process group's store (after ``init_process_group``).

    Reads only the ``host`` and ``port`` of the program's store object
    (``_get_default_store()``, a ``PrefixStore`` over a ``TCPStore``); it is
    never used to talk to the store: publishing joins it with a client of its own.

    Args:
        c10d (types.ModuleType): ``torch.distributed.distributed_c10d``.

    Returns:
        str | None: the address, or None when the group's store is no ``TCPStore``.
    """
    global _default_store
    import torch.distributed as dist

    found = c10d._get_default_store()
    while isinstance(found, dist.PrefixStore):
        found = found.underlying_store
    if isinstance(found, dist.TCPStore):
        _default_store = f"{found.host}:{found.port}"
    return _default_store


def connect(address):
    """Join the store at ``address`` as a client.

    Blocks up to :data:`CONNECT_TIMEOUT` seconds.

    Args:
        address (str | None): ``HOST:PORT``.

    Returns:
        torch.distributed.TCPStore: the client.

    Raises:
        StoreError: bad address, or nothing answers there.
    """
    if not address:
        raise StoreError(
            "no job store is known here (no MASTER_ADDR/MASTER_PORT, no process group)"
        )
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
    if "torch" in sys.modules:
        import torch.distributed as dist
    else:
        import warnings

        with warnings.catch_warnings():  # the CLI's first import of torch: its NumPy warning
            warnings.simplefilter("ignore")
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
    return read_all(store, COUNTER, "autodbg/session/{}")


def read_all(store, counter, key):
    """Return the JSON values of the keys ``key.format(1)`` to ``key.format(<counter>)`` that exist.

    Args:
        store (torch.distributed.Store): a client.
        counter (str): the counter key (``TCPStore.add``).
        key (str): the keys' pattern, ``{}`` for the number.

    Returns:
        list: the values, in order; unreadable ones are left out. At most the
        newest :data:`MAX_KEYS` keys are read.

    Raises:
        StoreError: the counter holds no number (anyone who reaches the store may set it).
    """
    if not store.check([counter]):
        return []
    # get(), not add(counter, 0): a value that is no number makes the store's server drop
    # the connection on add, and torch print pages of C++ warnings.
    value = store.get(counter)
    try:
        last = int(value)
    except ValueError:
        raise StoreError(f"the store's {counter} is not a counter: {value[:40]!r}") from None
    found = []
    for n in range(max(1, last - MAX_KEYS + 1), last + 1):
        name = key.format(n)
        if store.check([name]):  # get() would block until the key exists
            try:
                found.append(json.loads(store.get(name)))
            except (ValueError, RecursionError):  # not JSON, or nested past the parser's depth
                continue
    return found
