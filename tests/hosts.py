"""Simulated hosts on this machine for the two-host test: namespaces, veth pairs and an sshd.

A host is a set of namespaces held by one process (``sleep``, the init of the host's PID
namespace), made with ``ip netns`` and ``unshare``:

- network: a namespace of its own; it reaches each other host through a veth pair between
  the two, with point-to-point private addresses on that pair only (10.211.0.N);
- UTS: its own hostname;
- mount: ``/etc/hosts`` names every host and is the only name service (``nsswitch.conf``: no
  DNS server is reachable from the hosts, and a lookup must fail at once, not "try again"), and ``/root`` (so ``~/.ssh`` and ``~/.config``),
  ``/tmp`` (so the default runtime directory ``/tmp/autodbg-0``) and ``/run`` are the host's
  own: bind mounts of directories the test makes, which it writes from outside through
  :meth:`Host.file`;
- PID and IPC: a process id of one host means nothing on another.

``nsenter`` runs a command on a host (:meth:`Host.argv`). Killing the holder kills every
process of the host (the init of a PID namespace takes its namespace with it); everything
is removed when :func:`hosts` ends, even on failure, and what an aborted run left (its
pytest is gone) is removed when the next one starts.
"""

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile

import psutil
from harness import BIN, Proc, wait_until

SSHD = "/usr/sbin/sshd"
PREFIX = "adbg"  # of namespace names (adbg-PID-hN) and of the folders (adbg-hosts-PID)
# sshd's compiled-in PATH for a session (Debian): the venv is not on it, as on a cluster node.
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
TOOLS = ("ip", "nsenter", "unshare", "ssh", "ssh-keygen")


def unavailable():
    """Tell why simulated hosts cannot be made here, or None when they can.

    Returns:
        str | None: the reason (not root, a missing tool), for ``pytest.skip``.
    """
    if os.geteuid() != 0:
        return "simulated hosts need root (network, mount and PID namespaces)"
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if not os.access(SSHD, os.X_OK):
        missing.append(SSHD)
    if missing:
        return f"simulated hosts need {', '.join(missing)} (scripts/test installs them)"
    return None


def environment(**settings):
    """Return a clean environment for a command on a simulated host (nothing of this shell's).

    The venv's ``bin`` first, as for a user who activated it; ``HOME=/root`` (the host's
    own); no ``AUTODBG_*``, ``XDG_RUNTIME_DIR`` or ``MASTER_*``: the default runtime directory.

    Args:
        **settings (str): variables to add (``AUTODBG="1"``...).

    Returns:
        dict[str, str]: the environment.
    """
    env = {
        "PATH": BIN + os.pathsep + SYSTEM_PATH,
        "HOME": "/root",
        "USER": "root",
        "LANG": "C.UTF-8",
        "TERM": "xterm",
        "PROMPT_TOOLKIT_NO_CPR": "1",  # pexpect's pty answers no cursor-position request
    }
    env.update(settings)
    return env


class Host:
    """One simulated host (see the module's docstring).

    Attributes:
        name (str): its hostname, also in every host's ``/etc/hosts``.
        address (str): its IPv4 address (on each of its veth pairs).
        netns (str): its network namespace's name (``ip netns``).
        root (str): the folder outside holding its ``home``, ``tmp`` and ``run``.
        pid (int | None): the holder's pid (outside the host's PID namespace), once started.
    """

    def __init__(self, name, address, netns, root):
        self.name = name
        self.address = address
        self.netns = netns
        self.root = root
        self.pid = None
        self.holder = None

    def file(self, path):
        """Return where ``path`` of the host (under /root, /tmp or /run) is seen from outside.

        Args:
            path (str): an absolute path as the host's processes see it.

        Returns:
            str: the same file's path in this test's mount namespace.
        """
        for inside, outside in (("/root", "home"), ("/tmp", "tmp"), ("/run", "run")):
            if path == inside or path.startswith(inside + "/"):
                return os.path.join(self.root, outside, path[len(inside) + 1 :])
        raise ValueError(f"{path} is not one of the host's own folders")

    def argv(self, argv, cwd="/tmp"):
        """Return the command that runs ``argv`` on this host, in ``cwd`` (a path of the host).

        The environment is the caller's: pass :func:`environment`'s.
        """
        return [
            "nsenter",
            "-t",
            str(self.pid),
            "-p",
            "-n",
            "-m",
            "-u",
            "-i",
            f"--wd={cwd}",
            "--",
            *argv,
        ]

    def run(self, argv, env, timeout=60, **kwargs):
        """Run ``argv`` on this host and wait for it (at most ``timeout`` seconds).

        Returns:
            subprocess.CompletedProcess: with ``stdout`` and ``stderr`` as text.

        Raises:
            subprocess.TimeoutExpired: when it runs longer than ``timeout``.
        """
        return subprocess.run(
            self.argv(argv), env=env, capture_output=True, text=True, timeout=timeout, **kwargs
        )

    def start(self, etc):
        """Start the holder of the host's namespaces and wait (30 s) until its mounts are made.

        Args:
            etc (str): the folder of the hosts' ``hosts`` and ``nsswitch.conf``.
        """
        for folder, mode in (("home", 0o700), ("tmp", 0o1777), ("run", 0o755)):
            os.mkdir(os.path.join(self.root, folder))
            os.chmod(os.path.join(self.root, folder), mode)
        kept = [f"{path}={self.file(path)}" for path in shared()]
        for pair in kept:
            os.mkdir(pair.partition("=")[2])
        # The shared folders are bound into the host's own first, and carried with them
        # (--rbind) over this machine's /root and /tmp.
        script = (
            'hostname "$1" && mount --bind "$2/hosts" /etc/hosts'
            ' && mount --bind "$2/nsswitch.conf" /etc/nsswitch.conf && own="$3" && shift 3'
            ' && for pair; do mount --bind "${pair%%=*}" "${pair#*=}" || exit; done'
            ' && mount --rbind "$own/home" /root && mount --bind "$own/run" /run'
            ' && mount --rbind "$own/tmp" /tmp && echo ready && exec sleep infinity'
        )
        # --kill-child: the holder's parent (unshare) going takes the host down with it.
        self.holder = Proc(
            [
                "ip",
                "netns",
                "exec",
                self.netns,
                "unshare",
                "--uts",
                "--ipc",
                "--mount",
                "--pid",
                "--fork",
                "--kill-child",
                "--mount-proc",
                "--propagation",
                "private",
                "sh",
                "-c",
                script,
                "sh",
                self.name,
                etc,
                self.root,
                *kept,
            ],
            env=environment(),
        )
        self.holder.wait_for("ready", timeout=30)
        self.pid = psutil.Process(self.holder.pid).children()[0].pid

    def stop(self):
        """Kill every process of the host (its PID namespace's init first); wait (10 s) for them."""
        if self.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
        if self.holder is not None:
            self.holder.kill()
        wait_until(lambda: not _pids(self.netns), 10, f"the processes of {self.netns} to end")


def shared():
    """Return the folders of this machine's /root and /tmp that every host keeps: the software.

    The venv's interpreter may be a link into ``/root`` (pyenv's ``/root/.pyenv``), the
    checkout and its venv may be under ``/root`` or ``/tmp``: hosts of a cluster share their
    software (as they share /work here), not their homes or /tmp.

    Returns:
        list[str]: top-level entries of /root and /tmp (``/root/.pyenv``), possibly none.
    """
    kept = set()
    tests = os.path.dirname(os.path.abspath(__file__))
    for path in (sys.executable, sys.prefix, sys.base_prefix, tests):
        parts = os.path.realpath(path).split("/")
        if len(parts) > 2 and parts[1] in ("root", "tmp"):
            kept.add("/".join(parts[:3]))
    return sorted(kept)


def _pids(netns):
    out = subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True, timeout=10)
    return [int(pid) for pid in out.stdout.split()]


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def remove_stale():
    """Remove the namespaces and folders of earlier runs whose pytest is gone."""
    names = subprocess.run(
        ["ip", "netns", "list"], capture_output=True, text=True, timeout=10
    ).stdout.split()
    for name in names:
        found = re.fullmatch(rf"{PREFIX}-(\d+)-h\d+", name)
        if found and not _alive(int(found.group(1))):
            for pid in _pids(name):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)
    for entry in os.listdir("/tmp"):
        found = re.fullmatch(rf"{PREFIX}-hosts-(\d+)-.*", entry)
        if found and not _alive(int(found.group(1))):
            shutil.rmtree(os.path.join("/tmp", entry), ignore_errors=True)


def _links_up(netns):
    """Tell whether every veth of ``netns`` has its carrier (both ends up)."""
    out = subprocess.run(
        ["ip", "-n", netns, "-br", "link", "show", "type", "veth"],
        capture_output=True,
        text=True,
        timeout=10,
    ).stdout
    return all("LOWER_UP" in line for line in out.splitlines())


def _ip(*argv):
    subprocess.run(["ip", *argv], check=True, capture_output=True, timeout=10)


@contextlib.contextmanager
def hosts(count):
    """Make ``count`` simulated hosts, each joined to every other by a veth pair; remove them after.

    Host ``i`` is named ``adbg<pid>h<i>`` (so they sort in order: torch's c10d rendezvous
    gives the lowest node rank to the lowest host name) at 10.211.0.<i+1>.

    Yields:
        list[Host]: the hosts, started.
    """
    remove_stale()
    run = os.getpid()
    folder = tempfile.mkdtemp(prefix=f"{PREFIX}-hosts-{run}-", dir="/tmp")
    made = [
        Host(
            f"{PREFIX}{run}h{i}",
            f"10.211.0.{i + 1}",
            f"{PREFIX}-{run}-h{i}",
            os.path.join(folder, f"h{i}"),
        )
        for i in range(count)
    ]
    try:
        with open(os.path.join(folder, "hosts"), "w") as out:
            out.write("127.0.0.1 localhost\n")
            out.writelines(f"{host.address} {host.name}\n" for host in made)
        with open("/etc/nsswitch.conf") as system:
            lines = [line for line in system if not line.startswith("hosts:")]
        with open(os.path.join(folder, "nsswitch.conf"), "w") as out:
            out.writelines([*lines, "hosts: files\n"])
        for host in made:
            os.mkdir(host.root)
            _ip("netns", "add", host.netns)
            _ip("-n", host.netns, "link", "set", "lo", "up")
        for i, one in enumerate(made):
            for j, other in enumerate(made[i + 1 :], i + 1):
                here, there = f"ad{run % 100000}v{i}{j}", f"ad{run % 100000}v{j}{i}"
                _ip(
                    "link",
                    "add",
                    here,
                    "netns",
                    one.netns,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    there,
                    "netns",
                    other.netns,
                )
                for host, device, peer in ((one, here, other), (other, there, one)):
                    _ip(
                        "-n",
                        host.netns,
                        "addr",
                        "add",
                        host.address,
                        "peer",
                        peer.address,
                        "dev",
                        device,
                    )
                    _ip("-n", host.netns, "link", "set", device, "up")
        for host in made:
            wait_until(
                lambda host=host: _links_up(host.netns), 10, f"the veth links of {host.name}"
            )
            host.start(folder)
        yield made
    finally:
        for host in made:
            with contextlib.suppress(AssertionError):
                host.stop()
            subprocess.run(["ip", "netns", "del", host.netns], capture_output=True, timeout=10)
        shutil.rmtree(folder, ignore_errors=True)


def _keygen(path, comment):
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", path],
        check=True,
        capture_output=True,
        timeout=30,
    )
    with open(path + ".pub") as public:
        return public.read().strip()


@contextlib.contextmanager
def sshd(server, clients):
    """Run sshd on ``server`` (port 22) for root with a key each client host has in ``~/.ssh``.

    Its own host key (in the server's /tmp), each client's ``id_ed25519`` and
    ``known_hosts`` naming the server, the server's ``authorized_keys``; no password, no PAM
    (so an ssh session gets no ``XDG_RUNTIME_DIR`` and sshd's own PATH). Waits (30 s) for
    sshd to listen; kills it after.

    Args:
        server (Host): where sshd runs.
        clients (list[Host]): the hosts whose root may log in.

    Yields:
        harness.Proc: sshd (-D -e: its log is its output).
    """
    state = server.file("/tmp/sshd")
    os.mkdir(state, 0o700)
    os.mkdir(server.file("/run/sshd"), 0o755)  # privilege separation's chroot
    host_key = _keygen(os.path.join(state, "host_key"), server.name)
    with open(os.path.join(state, "config"), "w") as config:
        config.write(
            f"ListenAddress {server.address}:22\n"
            "HostKey /tmp/sshd/host_key\n"
            "PidFile none\n"
            "PermitRootLogin prohibit-password\n"
            "PubkeyAuthentication yes\n"
            "AuthorizedKeysFile /root/.ssh/authorized_keys\n"
            "PasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\n"
            "UsePAM no\n"
            "StrictModes yes\n"
            "PrintMotd no\n"
            "LogLevel VERBOSE\n"
        )
    authorized = []
    for client in clients:
        dot_ssh = client.file("/root/.ssh")
        os.makedirs(dot_ssh, 0o700, exist_ok=True)
        authorized.append(_keygen(os.path.join(dot_ssh, "id_ed25519"), client.name))
        with open(os.path.join(dot_ssh, "known_hosts"), "a") as known:
            known.write(f"{server.name},{server.address} {host_key}\n")
    os.makedirs(server.file("/root/.ssh"), 0o700, exist_ok=True)
    keys = server.file("/root/.ssh/authorized_keys")
    with open(keys, "a") as out:
        out.writelines(key + "\n" for key in authorized)
    os.chmod(keys, 0o600)
    daemon = Proc(server.argv([SSHD, "-D", "-e", "-f", "/tmp/sshd/config"]), env=environment())
    try:
        daemon.wait_for(f"Server listening on {server.address} port 22", timeout=30)
        yield daemon
    finally:
        daemon.kill()
