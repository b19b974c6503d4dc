"""Who this process is in its job: rank, local rank, world size, job, host.

Read from the environment that launchers set, first match wins:

==============  ===========================  ======================  =====================  ======================
launcher        rank                         local rank              world size             job
==============  ===========================  ======================  =====================  ======================
torchrun        ``RANK``                     ``LOCAL_RANK``          ``WORLD_SIZE``         ``TORCHELASTIC_RUN_ID``
SLURM (srun)    ``SLURM_PROCID``             ``SLURM_LOCALID``       ``SLURM_NTASKS``       ``SLURM_JOB_ID``
Open MPI        ``OMPI_COMM_WORLD_RANK``     ``..._LOCAL_RANK``      ``..._SIZE``           ``OMPI_MCA_ess_base_jobid``
MPICH, IMPI     ``PMI_RANK``                 ``MPI_LOCALRANKID``     ``PMI_SIZE``           (below)
==============  ===========================  ======================  =====================  ======================

With torchrun's default run id ``none``, the job is the store's endpoint
``MASTER_ADDR:MASTER_PORT``, which all its nodes share. Without a launcher's
job id, the job is ``AUTODBG_JOB`` when a parent autodbg process exported it, else ``pg<pgid>``
of this process; the bootstrap exports it so that children (multiprocessing,
torchrun's workers) land in the same job folder as their parent.
Start-up path: imports only ``os``.
"""

import os

_LAUNCHERS = (
    ("RANK", "LOCAL_RANK", "WORLD_SIZE", "TORCHELASTIC_RUN_ID"),
    ("SLURM_PROCID", "SLURM_LOCALID", "SLURM_NTASKS", "SLURM_JOB_ID"),
    (
        "OMPI_COMM_WORLD_RANK",
        "OMPI_COMM_WORLD_LOCAL_RANK",
        "OMPI_COMM_WORLD_SIZE",
        "OMPI_MCA_ess_base_jobid",
    ),
    ("PMI_RANK", "MPI_LOCALRANKID", "PMI_SIZE", None),
)


class Identity:
    """This process's place in its job.

    Attributes:
        rank (int | None): global rank, None for a plain process.
        local_rank (int | None): rank on this host.
        world_size (int | None): number of ranks in the job.
        job (str): job id; also the name of the job's folder in the runtime directory.
        host (str): this machine's node name.
        role (str | None): for a child process (:mod:`autodbg.children`), what it
            is to its parent: ``Process-1``, ``spawn process 1``, ``DataLoader worker 0``.
        parent_pid (int | None): a child's parent process.
        parent_rank (int | None): a child's parent's rank.
    """

    __slots__ = (
        "host",
        "job",
        "local_rank",
        "parent_pid",
        "parent_rank",
        "rank",
        "role",
        "world_size",
    )

    def __init__(
        self, rank, local_rank, world_size, job, host, role=None, parent_pid=None, parent_rank=None
    ):
        self.rank = rank
        self.local_rank = local_rank
        self.world_size = world_size
        self.job = job
        self.host = host
        self.role = role
        self.parent_pid = parent_pid
        self.parent_rank = parent_rank

    def child(self, role, parent_pid):
        """Return the identity of a child process of this process.

        The rank fields stay: the child inherited the launcher's environment and
        works for the same rank (a DataLoader worker of rank 1).

        Args:
            role (str): what the child is to its parent.
            parent_pid (int | None): the parent's pid.

        Returns:
            Identity: a new object.
        """
        me = (self.rank, self.local_rank, self.world_size, self.job, self.host)
        return Identity(*me, role=role, parent_pid=parent_pid, parent_rank=self.rank)

    def fields(self):
        """Return this identity as the fields of a session or crash record (a new dict)."""
        return {
            "rank": self.rank,
            "local_rank": self.local_rank,
            "world_size": self.world_size,
            "host": self.host,
            "job": self.job,
            "role": self.role,
            "parent_pid": self.parent_pid,
            "parent_rank": self.parent_rank,
        }

    def label(self):
        """Return ``"[rank N] "``, ``"[rank N / <role>] "``, ``"[<role>] "`` or ``""``."""
        parts = [] if self.rank is None else [f"rank {self.rank}"]
        if self.role is not None:
            parts.append(self.role)
        return f"[{' / '.join(parts)}] " if parts else ""


def from_env(environ=os.environ):
    """Build the identity from a launcher's environment.

    Args:
        environ (Mapping[str, str]): the environment to read.

    Returns:
        Identity: rank fields None when no launcher variable is set.
    """
    rank = local_rank = world_size = None
    job = None
    for rank_var, local_var, size_var, job_var in _LAUNCHERS:
        rank = _int(environ.get(rank_var))
        if rank is not None:
            local_rank = _int(environ.get(local_var))
            world_size = _int(environ.get(size_var))
            job = environ.get(job_var) if job_var else None
            break
    if (not job or job == "none") and rank is not None:
        # torchrun's default run id is "none" on every node; the store's endpoint
        # is what the nodes of one job share.
        job = store_address(environ)
    if not job or job == "none":
        job = environ.get("AUTODBG_JOB") or f"pg{os.getpgrp()}"
    return Identity(rank, local_rank, world_size, file_name(job, "job"), os.uname().nodename)


def store_address(environ=os.environ):
    """Return the job's c10d store as ``HOST:PORT`` (torchrun's ``MASTER_ADDR``, ``MASTER_PORT``), or None."""
    host, port = environ.get("MASTER_ADDR"), environ.get("MASTER_PORT")
    return f"{host}:{port}" if host and port else None


def multinode(environ=os.environ):
    """Tell whether this rank's job spans several nodes (torchrun's ``LOCAL_WORLD_SIZE`` < ``WORLD_SIZE``)."""
    local, world = _int(environ.get("LOCAL_WORLD_SIZE")), _int(environ.get("WORLD_SIZE"))
    return local is not None and world is not None and local < world


def _int(text):
    try:
        return int(text)
    except (TypeError, ValueError):
        return None


def file_name(text, default):
    """Return ``text`` as one harmless file-name component (a job id, a host name).

    Args:
        text (str): the name.
        default (str): what an empty result becomes.

    Returns:
        str: at most 64 characters of letters, digits, ``-``, ``_`` and ``.``
        (others become ``_``), no leading dot.
    """
    cleaned = "".join(c if c.isalnum() or c in "-_." else "_" for c in text)[:64]
    return cleaned.lstrip(".") or default


current = from_env()
