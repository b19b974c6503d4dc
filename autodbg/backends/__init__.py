"""Backends: each hands the debugger a :class:`Channel`, a terminal or a stream pair.

``console`` is the process's own terminal (under the terminal lock);
``socket`` is a Unix socket that ``autodbg attach`` (a pty relay, for the full
ipdb experience) or ``nc -U`` / ``socat`` (plain lines) connect to.
"""


class Channel:
    """What the debugger reads commands from and writes to.

    Attributes:
        kind (str): ``console`` (the process's terminal), ``pty`` (a server-side
            pseudo-terminal relayed to ``autodbg attach``) or ``line`` (a plain
            stream, one command per line, for ``nc``/``socat``).
        stdin (TextIO): commands come from here.
        stdout (TextIO): prompts and output go here.
        term (str | None): the client's ``TERM`` for ``pty``; None otherwise.
    """

    __slots__ = ("kind", "stdin", "stdout", "term")

    def __init__(self, kind, stdin, stdout, term=None):
        self.kind = kind
        self.stdin = stdin
        self.stdout = stdout
        self.term = term
