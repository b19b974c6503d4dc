"""Finding the job's store and its nodes, from any shell on a node of the job.

Three launchers, three ways the workers' c10d store is known:

* torchrun with ``--master-addr/--master-port``: the workers' ``MASTER_ADDR:MASTER_PORT``.
* torchrun with c10d rendezvous (``--rdzv-backend=c10d --rdzv-endpoint=HOST:PORT``):
  the endpoint is the rendezvous' store, not the workers'. The agent of group
  rank 0 starts another ``TCPStore`` on a free port (``DynamicRendezvousHandler
  .next_rendezvous``, ``_create_tcp_store_server``, torch 2.13
  ``torch/distributed/elastic/rendezvous/dynamic_rendezvous.py``) and
  publishes it as ``MASTER_ADDR``/``MASTER_PORT`` keys in the
  ``PrefixStore("torch.rendezvous.<run_id>.<round>")`` of the endpoint
  (``RendezvousStoreInfo.build`` in ``rendezvous/api.py``). The CLI could read
  those keys, but it would need the run id (``--rdzv-id``, which the user may
  not know) and the round, and the round is only in the rendezvous state,
  a pickle: unpickling what a store holds runs whatever anyone who reaches the
  port put there. So the autodbg-aware agent, which sees the outcome in
  ``LocalElasticAgent._start_workers`` (the worker group's ``master_addr``,
  ``master_port``; the endpoint's ``TCPStore`` under the group's
  ``PrefixStore``), writes :data:`JOB_KEY` in the endpoint's store: plain
  JSON naming the workers' store, no secret. ``--store ENDPOINT`` follows it.
* ``srun``/``mpirun`` jobs that call ``init_process_group`` with ``env://`` or
  ``tcp://``: the default process group's ``TCPStore``
  (:func:`autodbg.store.job_address`, learnt after ``init_process_group``).

And on a node of the job with no variable at all, the job record: the
agent (or local rank 0 of a launcher-less job) writes
``<runtime dir>/<job>/node.<host>.json`` (:data:`FIELDS`), and the same record
in the workers' store under ``autodbg/node/<n>`` (counter ``autodbg/nodes``),
which tells the CLI which other hosts to ask (:mod:`autodbg.transport`); once
every node has registered there, the writer copies the list into its file
(``nodes``), so that the CLI need not join the store for it. A
record counts while its process lives and started when the record says, as
session records (:func:`autodbg.registry.sessions`).
"""

import json
import os
import sys
import threading
import time

from autodbg import config, guard, identity, registry

JOB_KEY = "autodbg/job"  # in a c10d rendezvous endpoint's store: the workers' store
NODE_COUNTER = "autodbg/nodes"
NODE_KEY = "autodbg/node/{}"
NODES_WAIT = 300.0  # seconds a node waits for the others' records, to list them in its own
NODES_POLL = 0.5  # seconds between its looks
NODE_FIELDS = ("job", "host", "node_rank", "ranks", "pid", "python", "dir")  # of each, in `nodes`
FIELDS = (
    "job",
    "run_id",
    "store",
    "rendezvous",
    "node_rank",
    "nnodes",
    "ranks",
    "host",
    "pid",
    "python",
    "dir",
    "started",
    "nodes",  # once every node of the job registered: each one's NODE_FIELDS
)

_NONE = type(None)
# The types of a job record's fields the CLI relies on (None: absent).
TYPES = {
    "pid": (int,),
    "store": (str,),
    "job": (str,),
    "host": (str, _NONE),
    "nnodes": (int, _NONE),
    "node_rank": (int, _NONE),
    "started": (int, float, _NONE),
    "process_started": (int, float, _NONE),
    "ranks": (list, _NONE),
    "nodes": (list, _NONE),
    "dir": (str, _NONE),
}

# Those of a node's record in the store (or in another's ``nodes``): who wrote it is not known.
NODE_TYPES = {
    "host": (str,),
    "dir": (str, _NONE),
    "job": (str, _NONE),
    "node_rank": (int, _NONE),
    "ranks": (list, _NONE),
    "pid": (int, _NONE),
    "python": (str, _NONE),
}


class DiscoveryError(Exception):
    """The job cannot be told from what is known here; the message says what to do."""


def record_path(root, job, host=None):
    """Return the path of a node's job record: ``<root>/<job>/node.<host>.json``.

    Args:
        root (str): the runtime directory.
        job (str): the job's folder name.
        host (str | None): the node; None for this host.
    """
    return os.path.join(root, job, f"node.{registry.host_tag(host)}.json")


def node_record(job, run_id, store_address, rendezvous, node_rank, nnodes=None, ranks=None):
    """Return this process's job record (:data:`FIELDS`, plus ``process_started``).

    Args:
        job (str): the workers' job id (their job folder's name, :mod:`autodbg.identity`).
        run_id (str | None): torchrun's run id (``TORCHELASTIC_RUN_ID``).
        store_address (str): the workers' store, ``HOST:PORT``.
        rendezvous (str | None): the c10d rendezvous endpoint, when it is another store.
        node_rank (int | None): the node's rank in the job (torchrun's group rank).
        nnodes (int | None): how many nodes the job has (torchrun's group world
            size); None when not known (a launcher-less job).
        ranks (list[int] | None): the global ranks of the node's workers, when known.

    Returns:
        dict: the record.

    Raises:
        registry.RuntimeDirError: the runtime directory is unsafe.
    """
    return {
        "job": job,
        "run_id": run_id,
        "store": store_address,
        "rendezvous": rendezvous,
        "node_rank": node_rank,
        "nnodes": nnodes,
        "ranks": ranks,
        "host": os.uname().nodename,
        "pid": os.getpid(),
        "python": sys.executable,
        "dir": registry.runtime_dir(config.current().dir),
        "started": time.time(),
        "process_started": registry.process_started(os.getpid()),
    }


class Announcement:
    """This node's job record: its file now, the stores in a thread, all withdrawn at exit.

    The file is written at once (a rename, no wait). The stores are joined by
    new clients in a daemon thread (``autodbg-job-record``), each connect
    bounded by :data:`autodbg.store.CONNECT_TIMEOUT`: the launcher or the rank
    goes on meanwhile. At exit (``atexit``) the file goes and, through the
    client already connected, the store key: never a new connection then.

    Args:
        record (dict): from :func:`node_record`.
    """

    def __init__(self, record):
        self.record = record
        self.path = record_path(record["dir"], record["job"])
        self._client = None
        self._key = None
        self._withdrawn = False

    def publish(self):
        """Write the file, start the store thread, register the clean-up; never raises."""
        import atexit

        guard.call("the job record", self._write_file)
        atexit.register(guard.protect("the job record's clean-up")(self.withdraw))
        threading.Thread(
            target=guard.protect("the job record")(self._publish_in_stores),
            name="autodbg-job-record",
            daemon=True,
        ).start()

    def _write_file(self):
        from autodbg.messages import say

        try:
            registry.job_dir(self.record["dir"], self.record["job"])
            registry.write(self.path, self.record)
        except (OSError, registry.RuntimeDirError) as error:
            say(
                f"cannot write the job record {self.path} ({error}): "
                "`autodbg` needs --store on this node"
            )

    def _publish_in_stores(self):
        from autodbg import store
        from autodbg.messages import say

        try:
            rendezvous = self.record.get("rendezvous")
            if rendezvous:
                endpoint = store.connect(rendezvous)
                fields = {k: self.record[k] for k in ("job", "run_id", "store")}
                endpoint.set(JOB_KEY, json.dumps(fields))
            client = store.connect(self.record["store"])
            key = NODE_KEY.format(client.add(NODE_COUNTER, 1))
            client.set(key, json.dumps(self.record))
        except store.StoreError as error:
            say(
                f"cannot publish this node in the job's store ({error}); other nodes will not ask it"
            )
            return
        self._client, self._key = client, key
        self._learn_nodes(client)

    def _learn_nodes(self, client):
        # The CLI's `stack --all` and `cast` then know the other nodes from this file,
        # without joining the store (which imports torch: seconds of the CLI's time).
        from autodbg import store

        nnodes = self.record.get("nnodes")
        if not isinstance(nnodes, int) or nnodes < 2:
            return
        deadline = time.monotonic() + NODES_WAIT
        while not self._withdrawn and time.monotonic() < deadline:
            found = {}
            for node in store.read_all(client, NODE_COUNTER, NODE_KEY):
                # Anyone who reaches the store may write there: a forged value of another
                # shape (an unhashable dir) would fail this thread.
                if registry.shaped(node, NODE_TYPES) and node.get("job") == self.record["job"]:
                    found[(node.get("host"), node.get("dir"))] = node
            if len(found) >= nnodes:
                nodes = [{k: n.get(k) for k in NODE_FIELDS} for n in found.values()]
                if not self._withdrawn:
                    self.record["nodes"] = nodes
                    registry.write(self.path, self.record)
                return
            time.sleep(NODES_POLL)

    def withdraw(self):
        """Remove the file and the store key (best effort: the store may be gone with the job)."""
        self._withdrawn = True
        try:
            with open(self.path) as source:
                mine = json.load(source).get("pid") == os.getpid()
        except (OSError, ValueError, AttributeError):
            mine = False
        if mine:  # another rank of this host may have written it after this one
            registry.remove(self.path)
        if self._client is not None:
            try:
                self._client.delete_key(self._key)
            except Exception:
                pass  # the job's store ended before this process did


def job_records(root, job=None):
    """List the live job records of this host; remove the dead ones.

    Args:
        root (str): the runtime directory.
        job (str | None): only this job's.

    Returns:
        list[dict]: records, newest first.
    """
    found = []
    for name in registry._listdir(root):
        folder = os.path.join(root, name)
        if (job is not None and name != job) or os.path.islink(folder):
            continue
        path = os.path.join(folder, f"node.{registry.host_tag()}.json")
        try:
            record = registry.load(path)  # no FIFO, no symlink, bounded: it must not hang the CLI
        except (OSError, ValueError):
            continue
        if not registry.shaped(record, TYPES) or not registry.here(record):
            continue
        pid = record["pid"]
        started = registry.process_started(pid)
        expected = record.get("process_started")
        if started is None or (expected is not None and abs(started - expected) > 1):
            registry.remove(path)
            continue
        found.append(record)
    found.sort(key=lambda r: -(r.get("started") or 0))
    return found


def follow(address):
    """Return the workers' store that the store at ``address`` names, else ``address``.

    A c10d rendezvous endpoint holds :data:`JOB_KEY` (written by the
    autodbg-aware agent); any other store (the workers' own) does not.
    Blocks up to :data:`autodbg.store.CONNECT_TIMEOUT` seconds.

    Raises:
        autodbg.store.StoreError: nothing answers at ``address``.
    """
    from autodbg import store

    client = store.connect(address)
    if not client.check([JOB_KEY]):
        return address
    try:
        named = json.loads(client.get(JOB_KEY))["store"]
    except (ValueError, KeyError, TypeError):
        return address
    host, _, port = str(named).rpartition(":")
    return named if host and port.isdigit() else address


def store_address(args):
    """Return the job's store for a CLI verb, ``HOST:PORT``, or None when no job is known.

    In order: ``--store`` (a rendezvous endpoint followed to the workers'
    store, :func:`follow`), ``MASTER_ADDR``/``MASTER_PORT`` of the environment,
    this host's live job record (of ``--job`` when given), unless that job
    has one node only (then all of it is here: None).

    Args:
        args (argparse.Namespace): the verb's arguments (``store``, ``job``).

    Returns:
        str | None: the address.

    Raises:
        autodbg.store.StoreError: ``--store`` cannot be reached.
        DiscoveryError: several live jobs on this host and no ``--job``.
    """
    if getattr(args, "store", None):
        return follow(args.store)
    from_env = identity.store_address()
    if from_env:
        return from_env
    record = _job_record(args)
    if record.get("nnodes") == 1:
        return None  # a one-node job: all of it is on this host, no store to ask
    return record.get("store")


def job_stores(args):
    """Return every store a CLI verb that lists sessions reads, and whether the user named it.

    As :func:`store_address`, but with several live jobs on this host (and no
    ``--job``) the store of each, instead of an error: ``autodbg ls`` lists them all.

    Returns:
        tuple[list[str], bool]: the addresses, and True when ``--store`` named the store.

    Raises:
        autodbg.store.StoreError: ``--store`` cannot be reached.
    """
    if getattr(args, "store", None):
        return [follow(args.store)], True
    from_env = identity.store_address()
    if from_env:
        return [from_env], False
    try:
        root = registry.runtime_dir(config.load(warn=lambda line: None).dir)
    except registry.RuntimeDirError:
        return [], False
    records = job_records(root, getattr(args, "job", None))
    stores = [r["store"] for r in records if r.get("nnodes") != 1]
    return list(dict.fromkeys(stores)), False


def _job_record(args):
    """This host's one live job record (of ``--job``), ``{}`` when there is none."""
    try:
        root = registry.runtime_dir(config.load(warn=lambda line: None).dir)
    except registry.RuntimeDirError:
        return {}
    records = job_records(root, getattr(args, "job", None))
    jobs = sorted({r["job"] for r in records})
    if len(jobs) > 1:
        raise DiscoveryError(
            f"this host runs {len(jobs)} jobs ({', '.join(jobs)}); pick one with --job"
        )
    return records[0] if records else {}


def job_id(args):
    """Return the job the CLI works on: ``--job``, else this host's one live job record's, else None."""
    return getattr(args, "job", None) or _job_record(args).get("job")


def nodes(address):
    """Return the job records published in the store at ``address``, one per node (the newest).

    A node is a host and a runtime directory: two nodes of one job may share a
    host (each with its own ``AUTODBG_DIR``), and a host its directory with
    another (an NFS home).

    Blocks up to :data:`autodbg.store.CONNECT_TIMEOUT` seconds to connect.

    Raises:
        autodbg.store.StoreError: the store cannot be reached.
    """
    from autodbg import store

    newest = {}
    for record in store.read_all(store.connect(address), NODE_COUNTER, NODE_KEY):
        if registry.shaped(record, NODE_TYPES):
            newest[(record["host"], record.get("dir"))] = record
    return list(newest.values())


def this_node(record):
    """Tell whether the job record ``record`` is of this node: this host and this CLI's runtime directory."""
    if record.get("host") != os.uname().nodename:
        return False
    try:
        mine = registry.runtime_dir(config.load(warn=lambda line: None).dir)
    except registry.RuntimeDirError:
        return True
    return not isinstance(record.get("dir"), str) or _same(record["dir"], mine)


def _same(one, other):
    return os.path.realpath(one) == os.path.realpath(other)


def node_of(session, nodes):
    """Return the job record of the node where a session record's process runs, else None.

    Args:
        session (dict): a session record (``host``, ``socket``).
        nodes (list[dict]): job records (:func:`nodes`).
    """
    on_host = [n for n in nodes if n.get("host") == session.get("host")]
    socket = session.get("socket")
    for node in on_host:
        folder = node.get("dir")
        if (
            isinstance(socket, str)
            and isinstance(folder, str)
            and _same(os.path.dirname(os.path.dirname(socket)), folder)
        ):
            return node
    # Another host's paths cannot be resolved here: its one node is the one.
    elsewhere = session.get("host") != os.uname().nodename
    return on_host[0] if elsewhere and len(on_host) == 1 else None


def other_nodes(args):
    """Return the job's other nodes (:func:`this_node`), for fan-out (empty when no store is known).

    From this host's job record when it lists them (``nodes``: its writer
    read every node's record from the store once all had registered), which
    spares the CLI the store, and ``import torch``; else from the store.

    Args:
        args (argparse.Namespace): the verb's arguments (``store``, ``job``).

    Returns:
        list[dict]: their job records, sorted by node rank.

    Raises:
        autodbg.store.StoreError: the job's store cannot be reached.
        DiscoveryError: as :func:`store_address`.
    """
    listed = None
    if not getattr(args, "store", None) and not identity.store_address():
        listed = _job_record(args).get("nodes")
    if isinstance(listed, list):
        found = [r for r in listed if registry.shaped(r, NODE_TYPES) and not this_node(r)]
    else:
        address = store_address(args)
        if address is None:
            return []
        found = [r for r in nodes(address) if not this_node(r)]
    job = getattr(args, "job", None)
    if job:
        found = [r for r in found if r.get("job") == job]
    return sorted(found, key=lambda r: (r.get("node_rank") is None, r.get("node_rank") or 0))
