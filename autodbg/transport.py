"""Reaching another host of the job: a command the user already uses to get there.

No listening port: ``autodbg`` runs on the session's own host, through
``AUTODBG_REMOTE`` (``ssh {host}`` by default; ``srun --jobid=$SLURM_JOB_ID
--overlap -w {host} --pty``, ``kubectl exec -i -t {host} --``), and talks to
the session over its Unix socket there, so the socket's uid check
(``SO_PEERCRED``) holds end to end and no secret travels.

How the command is put together (:func:`command`): ``ssh`` hands its
arguments to the remote user's shell as one string (``ssh(1)``: "the command
... is executed on the remote host"), so the remote argv goes shell-quoted, as
one argument (``shlex.join``); ``srun`` and ``kubectl exec`` run their
arguments as an argv, so it goes as separate arguments. The remote login's
``PATH`` has no virtualenv: the node's own Python (``sys.executable`` of the
process that wrote its job record) runs ``-m autodbg`` by absolute path
(:func:`autodbg_argv`).
"""

import os
import shlex
import subprocess
import sys
import threading

from autodbg import config

SSH_STATUS = 255  # ssh's exit status for its own failures (ssh(1), EXIT STATUS)
NOT_FOUND = 127  # a shell's (and env(1)'s) status for a program it cannot find


class TransportError(Exception):
    """Another host cannot be reached, or autodbg cannot run there; one line for the user."""


def loopback(host):
    """Tell whether ``host`` is a loopback address, which other hosts cannot reach.

    Args:
        host (str | None): an IP address (IPv6 in brackets or not) or a name;
            no name is looked up: ``localhost`` and ``*.localhost`` (RFC 6761)
            are loopback, any other name is not.

    Returns:
        bool: False for None.
    """
    import ipaddress

    if host is None:
        return False
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _template():
    return shlex.split(config.current().remote)


def _is_ssh(words):
    return os.path.basename(words[0]) == "ssh"


def command(host, argv, interactive=False):
    """Return the command that runs ``argv`` on ``host`` through ``AUTODBG_REMOTE``.

    Args:
        host (str): the host, as the job records name it (its node name).
        argv (list[str]): the command to run there.
        interactive (bool): a person's terminal goes with it: ``ssh -t`` when
            stdin is a terminal; without it, ``ssh -o BatchMode=yes`` (no
            password prompt that nobody would answer).

    Returns:
        list[str]: the local command.
    """
    words = [word.replace("{host}", host) for word in _template()]
    if not _is_ssh(words):
        return words + list(argv)
    if interactive:
        options = ["-t"] if sys.stdin.isatty() else []
    else:
        options = ["-o", "BatchMode=yes"]
    return words[:1] + options + words[1:] + [shlex.join(argv)]


def autodbg_argv(node, args):
    """Return how to run ``autodbg <args>`` on ``node``.

    Args:
        node (dict): the node's job record (:mod:`autodbg.discovery`): its
            ``python`` and runtime ``dir``, when known.
        args (list[str]): the CLI's arguments.

    Returns:
        list[str]: ``[env AUTODBG_DIR=<dir>] <python> -m autodbg <args>``.
    """
    python = node.get("python") or sys.executable
    prefix = ["env", f"AUTODBG_DIR={node['dir']}"] if node.get("dir") else []
    return [*prefix, python, "-m", "autodbg", *args]


def _program():
    return _template()[0]


def _failure(node, status, stderr):
    """Return the TransportError that an exit ``status`` and ``stderr`` tell of, or None."""
    host = node["host"]
    lines = [line.strip() for line in (stderr or "").splitlines() if line.strip()]
    last = lines[-1] if lines else f"exit status {status}"
    if "No module named autodbg" in (stderr or ""):
        python = node.get("python") or sys.executable
        return TransportError(f"autodbg is not installed for {python} on {host}")
    if status == NOT_FOUND:
        python = node.get("python") or sys.executable
        return TransportError(
            f"cannot run {python} on {host} ({last}): is autodbg installed there?"
        )
    if status == SSH_STATUS and _is_ssh(_template()):
        return TransportError(f"cannot reach {host} through ssh: {last}")
    return None


def run(node, args, timeout):
    """Run ``autodbg <args>`` on ``node``, non-interactively, and return what it did.

    Blocks up to ``timeout`` seconds; the remote command is killed then.

    Args:
        node (dict): the node's job record (``host``, ``python``, ``dir``).
        args (list[str]): the CLI's arguments.
        timeout (float): seconds.

    Returns:
        subprocess.CompletedProcess: with ``stdout`` and ``stderr`` as text; a
        non-zero status of autodbg's own (1: it failed there) is for the caller.

    Raises:
        TransportError: the remote command is missing, the host cannot be
            reached, autodbg cannot run there, or no answer in time.
    """
    argv = command(node["host"], autodbg_argv(node, args))
    try:
        done = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,  # autodbg's own failure there is the caller's to read
        )
    except FileNotFoundError:
        raise TransportError(
            f"{_program()} not found: set AUTODBG_REMOTE to the command that runs a command "
            f"on another host ({{host}} for the host), to reach {node['host']}"
        ) from None
    except subprocess.TimeoutExpired:
        raise TransportError(f"no answer from {node['host']} within {timeout:g} s") from None
    error = _failure(node, done.returncode, done.stderr)
    if error is not None:
        raise error
    return done


def run_on(nodes, args, timeout):
    """Run ``autodbg <args>`` on every node at once (one thread each), bounded by ``timeout``.

    Args:
        nodes (list[dict]): job records of the nodes.
        args (list[str]): the CLI's arguments.
        timeout (float): seconds, for all of them together.

    Returns:
        dict[str, subprocess.CompletedProcess | TransportError]: by host.
    """
    results = {}

    def one(node):
        try:
            results[node["host"]] = run(node, args, timeout)
        except TransportError as error:
            results[node["host"]] = error

    threads = [
        threading.Thread(target=one, args=(node,), name=f"autodbg-remote-{node['host']}")
        for node in nodes
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()  # each run() is bounded by timeout
    return results


def attach(node, args):
    """Run ``autodbg <args>`` on ``node`` with this terminal (stdin, stdout, stderr inherited).

    Blocks until the remote command ends (the user's session: unbounded by
    design, as ``ssh`` is).

    Args:
        node (dict): the node's job record (``host``, ``python``, ``dir``).
        args (list[str]): the CLI's arguments (``attach --pid N ...``).

    Returns:
        int: the remote command's exit status.

    Raises:
        TransportError: the remote command is missing, or the host or autodbg
            cannot be reached (ssh's own message went to stderr already).
    """
    argv = command(node["host"], autodbg_argv(node, args), interactive=True)
    try:
        status = subprocess.call(argv)
    except FileNotFoundError:
        raise TransportError(
            f"{_program()} not found: set AUTODBG_REMOTE to the command that runs a command "
            f"on another host ({{host}} for the host), to reach {node['host']}"
        ) from None
    error = _failure(node, status, "")
    if error is not None:
        raise error
    return status
