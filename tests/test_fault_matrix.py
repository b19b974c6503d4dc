"""The fault matrix (issue 7): every way a process or job ends, run without and with autodbg.

Each row runs one command twice, at the same time: without autodbg (``AUTODBG`` unset) and with
it (``AUTODBG=1``), the environment otherwise the same. The two runs are compared on

- the exit status;
- the tracebacks: how many times a "Traceback (most recent call last)" line is printed, counted
  per prefix on its line (torch's ``[rank1]: ``, a DataLoader's ``Original ``), so that a
  traceback printed twice, or lost, or printed by another rank, shows;
- the time to end, from the row's start event (the start of the program, or the signal): at
  most the plain run's plus ``BOUND`` seconds, plus the time a session legitimately waited (for
  the test's client, or ``AUTODBG_WAIT`` with none);
- what is left behind: files in the runtime directory other than crash records, and processes
  of the run still alive once it ended;
- the sessions: the crash records written, against what the row expects (a session where
  autodbg should open none, as for torchrun's own ``SignalException``, writes one).

The plain run is checked too, against the status and traceback count the row expects, so that
a broken harness is not read as autodbg's fault. A run still going well past its bound is
reported as ``held`` and killed. The matrix is printed as a table in pytest's terminal summary;
a failing row's assertion message repeats its line with the differences and both outputs.
"""

import dataclasses
import os
import re
import signal
import subprocess
import termios
import threading
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Callable

import pexpect
import pytest
from conftest import PYTHON
from harness import BIN, files_under, plain, target, wait_for_record, wait_until

from autodbg.messages import FAILURES

BOUND = 5.0  # seconds a run with autodbg may take beyond the plain run's time (and its allowance)
GRACE = 5.0  # seconds past that bound before a run is called held and killed
WAIT = "2"  # AUTODBG_WAIT of the rows whose session waits with no client
TRACEBACK = "Traceback (most recent call last)"
TORCHRUN = os.path.join(BIN, "torchrun")


@dataclasses.dataclass
class Row:
    """One way of ending, and what the run without autodbg does.

    Attributes:
        id (str): the row's name in the table and in pytest's ids.
        drive (Callable[[Side], None]): runs one side (see :class:`Side`) to its end.
        status (int): the exit status of the plain run (negative: killed by that signal).
        tracebacks (int): how many tracebacks the plain run prints.
        records (int): crash records the run with autodbg writes (its post-mortem sessions).
        env (dict): variables of both runs, beside the fixture's.
        wait (str | None): ``AUTODBG_WAIT`` of both runs; None leaves autodbg's default (3600 s),
            so that a session where none belongs holds the run until it is killed.
        waits (bool): the session legitimately waits the whole ``wait`` with no client.
        record (dict): fields of the session record a client waits for.
        deadline (float): seconds a run may take before it is killed, until the plain run's
            time gives a tighter bound.
        torch (bool): needs torch (marked ``torch``).
        slow (bool): takes seconds, a torchrun job (marked ``slow``).
    """

    id: str
    drive: Callable
    status: int
    tracebacks: int
    records: int = 0
    env: dict = dataclasses.field(default_factory=dict)
    wait: str | None = None
    waits: bool = False
    record: dict = dataclasses.field(default_factory=dict)
    deadline: float = 45.0
    torch: bool = False
    slow: bool = False


class Side:
    """One run of a row, without autodbg (``plain``) or with it, and what it showed.

    Attributes:
        t0 (float | None): ``time.monotonic()`` of the event its time to end counts from.
        allowance (float): seconds its session legitimately waited (0 for the plain run).
        status (int | str | None): exit status; ``held`` when it was killed at its bound.
        seconds (float | None): time to end, from ``t0``.
        output (str): everything it printed (stdout and stderr, escape sequences removed).
        notes (list[str]): what the driver saw on the way (a stopped job, a missing prompt).
        error (str | None): the driver's own failure (a harness problem), as a traceback.
    """

    def __init__(self, row, autodbg, env, runtime_dir, start, spawn):
        self.row = row
        self.autodbg = autodbg
        self.name = "with" if autodbg else "without"
        self.env = dict(env, FM_RUN=f"{row.id}-{self.name}-{uuid.uuid4().hex}", **row.env)
        if not autodbg:
            del self.env["AUTODBG"]
        if row.wait is None:
            del self.env["AUTODBG_WAIT"]
        else:
            self.env["AUTODBG_WAIT"] = row.wait
        self.runtime_dir = runtime_dir
        self._start = start
        self._spawn = spawn
        self.plain = None  # the run without autodbg, for the run with it
        self.t0 = None
        self.allowance = float(row.wait) if autodbg and row.waits else 0.0
        self.status = self.seconds = self.error = None
        self.output = ""
        self.notes = []
        self.done = threading.Event()

    def start(self, argv):
        """Start ``argv`` with :class:`harness.Proc`; its time counts from now."""
        self.t0 = time.monotonic()
        return self._start(argv, self.env)

    def spawn(self, command, clock=True):
        """Start ``command`` on a real pty (pexpect); with ``clock``, the time counts from now."""
        if clock:
            self.t0 = time.monotonic()
        return self._spawn(command, self.env, timeout=self.row.deadline)

    def record(self, **fields):
        """Wait for the session record of this run (a socket session waiting); return it.

        Also counts the session's wait up to the caller's next step: call :meth:`waited` then.
        """
        found = wait_for_record(
            self.runtime_dir,
            timeout=self.row.deadline,
            state="waiting",
            **self.row.record,
            **fields,
        )
        self._seen = time.monotonic()
        return found

    def waited(self, extra=0.0):
        """The session waited from its record until now (a client's action), plus ``extra`` s."""
        self.allowance += time.monotonic() - self._seen + extra

    def limit(self):
        """Seconds after ``t0`` at which this run is held: the plain run's time, the allowance,
        ``BOUND`` and ``GRACE`` once the plain run ended; the row's deadline until then."""
        if self.plain is not None and self.plain.done.is_set() and self.plain.seconds is not None:
            return min(self.row.deadline, self.plain.seconds + self.allowance + BOUND + GRACE)
        return self.row.deadline

    def remaining(self):
        """Seconds left before :meth:`limit`."""
        return self.t0 + self.limit() - time.monotonic()

    def end(self, proc):
        """Wait for ``proc`` to exit, at most until :meth:`limit`; then kill it (``held``)."""
        while True:
            remaining = self.remaining()
            if remaining <= 0:
                self.seconds = time.monotonic() - self.t0
                self.notes.append(f"still running after {self.seconds:.1f} s: killed")
                self.output = proc.output  # what the kill makes it print is not the row's
                proc.kill()
                self.status = "held"
                return
            try:
                self.status = proc.popen.wait(min(remaining, 0.5))
            except subprocess.TimeoutExpired:
                continue
            self.seconds = time.monotonic() - self.t0
            proc.wait(10)  # its output read to the end
            break
        self.output = proc.output

    def end_pty(self, child, pattern=pexpect.EOF):
        """Wait for ``pattern`` from ``child`` (its end), at most until :meth:`limit`.

        Returns:
            bool: whether it came; when it did not, the run is ``held``.
        """
        while True:
            remaining = self.remaining()
            if remaining <= 0:
                self.seconds = time.monotonic() - self.t0
                self.notes.append(f"no end after {self.seconds:.1f} s")
                self.status = "held"
                return False
            try:
                child.expect(pattern, timeout=min(remaining, 0.5))
            except pexpect.TIMEOUT:
                continue
            self.seconds = time.monotonic() - self.t0
            return True

    def pty_output(self, child):
        """What ``child`` printed on its pty, as lines without escape sequences."""
        return plain(child.logfile_read.getvalue()).replace("\r", "")


# Drivers: each runs one side of a row to its end.


def program(argv, client=None):
    """A program on pipes; with autodbg, ``client(side, proc)`` ends its session first."""

    def drive(side):
        proc = side.start(argv)
        if side.autodbg and client is not None:
            client(side, proc)
        side.end(proc)

    return drive


def quits(side, proc):
    """A line client quits the session: ``printf 'q\\n' | nc -U <socket>``."""
    socket = side.record()["socket"]
    side.waited()
    subprocess.run(
        ["nc", "-U", socket], input="q\n", capture_output=True, text=True, timeout=30, check=False
    )


def vanishes(side, proc):
    """A line client starts a 30 s command, then is killed; the session then waits AUTODBG_WAIT."""
    socket = side.record()["socket"]
    client = side.spawn(f"nc -U {socket}", clock=False)
    client.expect("ipdb> ")
    client.sendline("!print('sle' + 'eping'); import time; time.sleep(30)")
    client.expect("sleeping")  # the echo of the line cannot match
    os.kill(client.pid, signal.SIGKILL)
    side.waited(float(WAIT))


def ctrl_c_at_the_prompt(side):
    """A console session on a real pty: Ctrl-C at the ipdb prompt, then ``q``."""
    child = side.spawn(f"{PYTHON} {target('crash.py')}")
    if side.autodbg:
        child.expect("ipdb>")
        shown = time.monotonic()
        reading(child)  # a Ctrl-C before the prompt reads keys would be the terminal's SIGINT
        child.sendcontrol("c")  # prompt_toolkit clears the line, and prints no new prompt
        child.sendline("p 6 * 7")  # the session still answers
        if child.expect(["42", pexpect.EOF]) == 1:
            side.notes.append("Ctrl-C at the prompt ended the program")
        else:
            child.expect("ipdb>")
            reading(child)
            child.sendline("q")
        side.allowance = time.monotonic() - shown
    if side.end_pty(child):
        child.close()
        side.status = child.exitstatus if child.exitstatus is not None else -child.signalstatus
    side.output = side.pty_output(child)


def reading(child):
    """Wait until the program on ``child``'s pty reads keys one by one (the prompt's raw mode)."""
    wait_until(
        lambda: not termios.tcgetattr(child.child_fd)[3] & termios.ICANON,
        10,
        "the prompt's raw mode",
    )


def background_job(side):
    """``python crash.py &`` in an interactive bash on a real pty; ``wait %1`` gives its status.

    The shell keeps the terminal's foreground; the job is in a process group of its own, so
    the terminal stops it (SIGTTOU, SIGTTIN) if it takes the terminal.
    """
    shell = side.spawn("bash --norc --noprofile -i", clock=False)
    shell.sendline("PS1='f''m$ '")  # the echo of this line cannot match the prompt
    shell.expect_exact("fm$ ")
    side.t0 = time.monotonic()
    shell.sendline(f"{PYTHON} {target('crash.py')} &")
    shell.sendline("wait %1; echo st''atus=$?")
    if side.end_pty(shell, r"status=(\d+)"):
        side.status = int(shell.match.group(1))
    else:
        shell.sendcontrol("c")  # out of `wait`, to ask the shell what became of the job
        shell.sendline("jobs -l; echo jo''bs-done")
        try:
            shell.expect("jobs-done", timeout=10)
            side.notes.append("jobs -l: " + " ".join(shell.before.split()[-8:]))
        except pexpect.TIMEOUT:
            side.notes.append("the shell did not answer `jobs -l`")
    shell.sendline("kill -9 %1 2>/dev/null; wait; exit")  # with a stopped job, `exit` would not
    shell.expect(pexpect.EOF, timeout=10)
    side.output = side.pty_output(shell).replace("fm$ ", "")  # the job's output may follow a prompt


def torchrun(kind, prefix=()):
    """The command of a 2-rank job of ``fm_ddp.py`` (``kind`` is its argv[1])."""
    return [*prefix, TORCHRUN, "--standalone", "--nproc_per_node=2", target("fm_ddp.py"), kind]


def signalled(kind, signum):
    """Signal torchrun once the job is blocked (``kind`` ``thread``: rank 1's session waiting)."""

    def drive(side):
        proc = side.start(torchrun(kind))
        proc.wait_for("fm rank 0 blocked", timeout=side.row.deadline)
        proc.wait_for("fm rank 1 blocked", timeout=side.row.deadline)
        if kind == "thread":
            proc.wait_for("ValueError: rank 1 thread fails", timeout=side.row.deadline)
            if side.autodbg:
                side.record(rank=1)
        side.t0 = time.monotonic()
        os.kill(proc.pid, signum)
        side.end(proc)

    return drive


def timed_out(side):
    """``timeout -s TERM 20 torchrun ...`` of a hung job; its time counts from the start."""
    proc = side.start(torchrun("hang", prefix=("timeout", "-s", "TERM", "20")))
    side.end(proc)
    if side.output.count("fm rank ") < 2:
        side.error = "the job was not hung yet when `timeout` sent SIGTERM: raise its 20 s"


def rank_crashed(signum, at):
    """Rank 1 fails in its main thread. With autodbg, once its session waits, send ``signum``
    to torchrun (``at="torchrun"``) or to rank 1 itself (``at="rank"``); without autodbg there
    is no session: the job ends on rank 1's failure, and its time counts from the traceback.
    """

    def drive(side):
        proc = side.start(torchrun("crash"))
        if side.autodbg:
            rank = side.record(rank=1)["pid"]
            side.t0 = time.monotonic()
            os.kill(proc.pid if at == "torchrun" else rank, signum)
        else:
            proc.wait_for("RuntimeError: rank 1 fails", timeout=side.row.deadline)
            side.t0 = time.monotonic()
        side.end(proc)

    return drive


def ends(kind):
    """The command of ``fm_ends.py`` ending the way ``kind`` names."""
    return [PYTHON, target("fm_ends.py"), kind]


CRASH = [PYTHON, target("crash.py")]
SESSION = {"records": 1, "wait": WAIT, "waits": True}  # a session waits AUTODBG_WAIT, no client
OPEN = {"records": 1, "wait": "60"}  # a session open until the test's client or signal ends it
TORCH = {"deadline": 90, "torch": True, "slow": True}  # a torchrun job
# torchrun passes a signal on to its workers: on SIGINT each rank prints a KeyboardInterrupt.
SIGNALS = (
    ("SIGTERM", signal.SIGTERM, 0),
    ("SIGINT", signal.SIGINT, 2),
    ("SIGHUP", signal.SIGHUP, 0),
)
THREAD = [PYTHON, target("thread_crash.py")]
MP_CHILD = [PYTHON, target("mp_child.py"), "fork"]
LOADER = [PYTHON, target("loader_crash.py")]
FORK_CHILD = {"role": "ForkProcess-1"}
ROWS = [
    Row("main thread", program(CRASH, quits), status=1, tracebacks=1, **OPEN),
    Row("other thread", program(THREAD), 0, 1, **SESSION),
    Row("multiprocessing child", program(MP_CHILD, quits), 0, 1, record=FORK_CHILD, **OPEN),
    Row("DataLoader worker", program(LOADER), 1, 2, **SESSION, torch=True),
    Row("KeyboardInterrupt", program(ends("keyboard")), status=-signal.SIGINT, tracebacks=1),
    Row("SystemExit(3)", program(ends("exit3")), status=3, tracebacks=0),
    Row("BdbQuit", program(ends("bdbquit")), status=1, tracebacks=1),
    Row("PYTHONBREAKPOINT=0", program(ends("breakpoint")), 0, 0, env={"PYTHONBREAKPOINT": "0"}),
    Row("AUTODBG_MODE=off", program(CRASH), 1, 1, env={"AUTODBG_MODE": "off"}),
    Row("AUTODBG_MODE=socket", program(CRASH, quits), 1, 1, env={"AUTODBG_MODE": "socket"}, **OPEN),
    Row(
        "AUTODBG_MODE=console, no terminal",
        program(CRASH),
        1,
        1,
        env={"AUTODBG_MODE": "console"},
        **SESSION,
    ),
    Row("AUTODBG_WAIT expiring", program(CRASH), 1, 1, **SESSION),
    Row("client vanishes mid-command", program(CRASH, vanishes), 1, 1, records=1, wait=WAIT),
    Row("Ctrl-C at the prompt", ctrl_c_at_the_prompt, 1, 1, **OPEN),
    Row("background job of a pty", background_job, 1, 1, **SESSION),
    *(
        Row(f"{name} to torchrun, no session", signalled("hang", signum), 1, 1 + ranks, **TORCH)
        for name, signum, ranks in SIGNALS
    ),
    *(
        Row(
            f"{name} to torchrun, session waiting",
            signalled("thread", signum),
            1,
            2 + ranks,
            **OPEN,
            **TORCH,
        )
        for name, signum, ranks in SIGNALS
    ),
    Row("timeout -s TERM 20 torchrun (hung job)", timed_out, status=124, tracebacks=1, **TORCH),
    Row(
        "SIGTERM to torchrun, main thread in session",
        rank_crashed(signal.SIGTERM, "torchrun"),
        1,
        2,
        **OPEN,
        **TORCH,
    ),
    Row(
        "SIGKILL of a rank in session", rank_crashed(signal.SIGKILL, "rank"), 1, 2, **OPEN, **TORCH
    ),
]


# The table, printed in pytest's terminal summary.

RESULTS = []
COLUMNS = (
    "row",
    "without: status, time",
    "with: status, time",
    "tracebacks",
    "records",
    "leftover",
    "verdict",
)


def line(cells):
    """One line of the table."""
    widths = (44, 21, 28, 34, 7, 30, 4)
    return " | ".join(str(cell).ljust(width) for cell, width in zip(cells, widths)).rstrip()


class _Table:
    """A plugin that prints the matrix at the end of pytest's run, passed rows and failed alike."""

    def pytest_terminal_summary(self, terminalreporter):
        if not RESULTS:
            return
        terminalreporter.write_sep(
            "=", f"fault matrix (time bound: without + {BOUND:.0f} s + the session's wait)"
        )
        terminalreporter.write_line(line(COLUMNS))
        for cells, differences in RESULTS:
            terminalreporter.write_line(line(cells))
        for cells, differences in RESULTS:
            for difference in differences:
                terminalreporter.write_line(f"{cells[0]}: {difference}")


@pytest.fixture(scope="module", autouse=True)
def table(request):
    """Register :class:`_Table` once per pytest run."""
    if not request.config.pluginmanager.has_plugin("fault-matrix"):
        request.config.pluginmanager.register(_Table(), "fault-matrix")


# Comparison.


# What may stand right before a traceback's header on its line: torch's rank prefix, or a
# DataLoader's "Original". Anything before that is another process's output, interleaved
# with this one's on a shared pipe.
PREFIX = re.compile(r"(\[rank\d+\]: |Original )?$")


def tracebacks(output):
    """Count the traceback headers of ``output`` per the prefix right before them.

    The copy in torchrun's failure summary (``traceback : Traceback ...``, read from the
    failed rank's error file, which autodbg writes: tests/test_error_file.py) is torchrun's
    report, not a print of the program's, and is not counted.
    """
    return Counter(
        PREFIX.search(text[: text.index(TRACEBACK)]).group()
        for text in output.splitlines()
        if TRACEBACK in text and not text[: text.index(TRACEBACK)].endswith("traceback : ")
    )


def shown(counts):
    """Traceback counts for the table: ``-:1 [rank1]:1`` (``-`` is no prefix), or ``0``."""
    return (
        " ".join(f"{prefix.strip().rstrip(':') or '-'}:{n}" for prefix, n in sorted(counts.items()))
        or "0"
    )


def alive(marker):
    """The pids of processes whose environment holds ``FM_RUN=marker`` (a run's leftovers)."""
    needle = f"FM_RUN={marker}".encode() + b"\0"
    found = []
    for name in os.listdir("/proc"):
        try:
            with open(f"/proc/{name}/environ", "rb") as file:
                if needle in file.read():
                    found.append(int(name))
        except (OSError, ValueError):
            continue
    return found


def leftovers(side):
    """Kill and name the processes of ``side`` still alive after it ended."""
    pids = alive(side.env["FM_RUN"])
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return [f"pid {pid} ({side.name})" for pid in pids]


def run_row(row, env, runtime_dir, start, spawn):
    """Run both sides of ``row`` at once, each on a thread of its own; return (plain, with)."""
    plain_side = Side(row, False, env, runtime_dir, start, spawn)
    with_side = Side(row, True, env, runtime_dir, start, spawn)
    with_side.plain = plain_side

    def run(side):
        try:
            row.drive(side)
        except Exception:
            side.error = traceback.format_exc()
        finally:
            side.done.set()

    threads = [
        threading.Thread(target=run, args=(side,), name=f"fm-{side.name}")
        for side in (plain_side, with_side)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(row.deadline * 3)
    return plain_side, with_side


def compare(row, plain_side, with_side, runtime_dir):
    """Return the row's table cells and its differences (empty when the row passes)."""
    differences = []
    for side in (plain_side, with_side):
        if side.error:
            differences.append(f"harness ({side.name}): {side.error.strip().splitlines()[-1]}")
    counted = {side.name: tracebacks(side.output) for side in (plain_side, with_side)}
    if plain_side.status != row.status or sum(counted["without"].values()) != row.tracebacks:
        differences.append(
            f"harness: without autodbg the row expects status {row.status} and {row.tracebacks} "
            f"traceback(s), got {plain_side.status} and {shown(counted['without'])}"
        )
    if with_side.status != plain_side.status:
        differences.append(f"status {with_side.status} with autodbg, {plain_side.status} without")
    if counted["with"] != counted["without"]:
        differences.append(
            f"tracebacks {shown(counted['with'])} with autodbg, {shown(counted['without'])} without"
        )
    bound = None
    if plain_side.seconds is not None and with_side.seconds is not None:
        bound = plain_side.seconds + with_side.allowance + BOUND
        if with_side.seconds > bound:
            differences.append(
                f"time {with_side.seconds:.1f} s > {plain_side.seconds:.1f} s without"
                f" + {with_side.allowance:.1f} s of session + {BOUND:.0f} s"
            )
    records = files_under(os.path.join(runtime_dir, "crashes"), lambda name: True)
    if len(records) != row.records:
        differences.append(
            f"{len(records)} crash record(s) (sessions), the row expects {row.records}"
        )
    crashes = os.path.join(runtime_dir, "crashes") + os.sep
    left = [
        os.path.relpath(path, runtime_dir)
        for path in files_under(runtime_dir, lambda name: True)
        if not path.startswith(crashes)
    ]
    left += leftovers(plain_side) + leftovers(with_side)
    if left:
        differences.append("left behind: " + ", ".join(left))
    failures = [
        sign
        for sign in FAILURES
        if f"autodbg: {sign}" in with_side.output or f"] {sign}" in with_side.output
    ]
    if failures:
        differences.append(f"autodbg failure line(s): {failures}")
    for side in (plain_side, with_side):
        differences += [f"{side.name}: {note}" for note in side.notes]

    def status_time(side):
        seconds = "?" if side.seconds is None else f"{side.seconds:.1f} s"
        return f"{side.status}, {seconds}"

    cells = (
        row.id,
        status_time(plain_side),
        status_time(with_side) + ("" if bound is None else f" (<= {bound:.1f})"),
        f"{shown(counted['without'])} / {shown(counted['with'])}",
        f"{len(records)}/{row.records}",
        f"{len(left)}: {' '.join(left)[:26]}" if left else "none",
        "FAIL" if [d for d in differences if not d.startswith(("with: ", "without: "))] else "pass",
    )
    return cells, differences


def params():
    """The rows as pytest parameters, marked ``torch`` and ``slow`` where they are."""
    for row in ROWS:
        marks = [pytest.mark.timeout(300 if row.torch else 120)]
        marks += [pytest.mark.torch] if row.torch else []
        marks += [pytest.mark.slow] if row.slow else []
        yield pytest.param(row, id=row.id, marks=marks)


@pytest.mark.parametrize("row", list(params()))
def test_fault_matrix(row, env, runtime_dir, start, spawn):
    if row.torch:
        pytest.importorskip("torch")
    plain_side, with_side = run_row(row, env, runtime_dir, start, spawn)
    cells, differences = compare(row, plain_side, with_side, runtime_dir)
    RESULTS.append((cells, differences))
    if cells[-1] == "FAIL":
        detail = "\n".join(
            f"--- {side.name} autodbg (status {side.status}):\n{side.output[-6000:]}"
            + (f"\n{side.error}" if side.error else "")
            for side in (plain_side, with_side)
        )
        pytest.fail(
            f"{line(COLUMNS)}\n{line(cells)}\n- " + "\n- ".join(differences) + f"\n{detail}",
            pytrace=False,
        )
