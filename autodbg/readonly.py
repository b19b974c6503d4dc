"""A rank's side of ``autodbg cast``: commands that cannot change it, and their answers.

:func:`answer` runs on the rank's stack thread (:mod:`autodbg.stacks`) when
a request of the CLI (:mod:`autodbg.cast`) is there. It runs what ``autodbg
cast`` may run on a rank that nobody stopped: ``p EXPR``, ``pp
EXPR``, a bare expression (as ``p``), ``w`` (``where``, ``bt``) and ``a``
(``args``), as pdb answers them. An expression is checked with :mod:`ast`:
names, attributes, subscripts, constants, operators, comparisons,
containers, comprehensions, f-strings; calls only of side-effect-free
builtins (:data:`BUILTINS`, checked by identity when called, so a local
named ``len`` is not called) and of read-only methods of built-in values,
tensors and numpy arrays (:data:`METHODS`). Never: assignment, ``:=``,
``del``, ``lambda``, imports, names and attributes starting with ``__``
(but ``__name__``, ``__qualname__``, ``__module__``, ``__file__``,
``__doc__``). The compiled code calls the helpers of :func:`runtime`, which
also refuse iterating an iterator (a generator, a ``DataLoader``'s
iterator, a file: it would advance) and reading a missing key of a
``defaultdict`` (it would insert it). Attribute reads and ``repr`` run the
program's code (properties, ``__repr__``), as pdb's ``p`` does.
"""

import ast
import json
import os
import stat
import sys
import time

from autodbg import guard

MAX_ANSWER = 4096  # characters of one rank's answer

BUILTINS = (
    "abs", "all", "any", "ascii", "bin", "bool", "callable", "chr", "complex", "dict", "divmod",
    "enumerate", "float", "format", "frozenset", "hasattr", "hash", "hex", "id", "int",
    "isinstance", "issubclass", "len", "list", "max", "min", "oct", "ord", "pow", "range", "repr",
    "reversed", "round", "set", "slice", "sorted", "str", "sum", "tuple", "type", "zip",
)  # fmt: skip
# Builtins that iterate over their arguments: an iterator among them would be consumed.
_ITERATING = (
    "all", "any", "dict", "enumerate", "frozenset", "list", "max", "min", "set", "sorted", "sum",
    "tuple", "zip",
)  # fmt: skip
_STR = (
    "count", "decode", "encode", "endswith", "find", "hex", "index", "isalnum", "isalpha",
    "isdigit", "islower", "isspace", "isupper", "join", "lower", "lstrip", "partition", "replace",
    "rfind", "rindex", "rpartition", "rsplit", "rstrip", "split", "splitlines", "startswith",
    "strip", "title", "upper", "zfill",
)  # fmt: skip
_ARRAY = (
    "abs", "all", "amax", "amin", "any", "argmax", "argmin", "bool", "count_nonzero", "cpu",
    "cumsum", "detach", "dim", "double", "element_size", "eq", "equal", "flatten", "float",
    "ge", "get_device", "gt", "half", "int", "is_complex", "is_contiguous", "is_floating_point",
    "isfinite", "isinf", "isnan", "item", "le", "long", "lt", "max", "mean", "median", "min",
    "ndimension", "ne", "nelement", "nonzero", "norm", "numel", "prod", "reshape", "round",
    "size", "squeeze", "std", "stride", "sum", "t", "tolist", "topk", "transpose", "unique",
    "unsqueeze", "var", "view", "astype", "copy",
)  # fmt: skip
# Read-only methods by the receiver's exact type (a subclass may override them).
METHODS = {
    str: _STR,
    bytes: _STR,
    list: ("count", "index", "copy"),
    tuple: ("count", "index"),
    range: ("count", "index"),
    dict: ("copy", "get", "items", "keys", "values"),
    set: ("copy", "difference", "intersection", "isdisjoint", "issubset", "issuperset", "union"),
    frozenset: ("difference", "intersection", "isdisjoint", "issubset", "issuperset", "union"),
    int: ("bit_length", "conjugate", "as_integer_ratio"),
    float: ("conjugate", "is_integer", "as_integer_ratio", "hex"),
    complex: ("conjugate",),
    bool: ("bit_length",),
    "array": _ARRAY,  # torch.Tensor and its subclasses (Parameter), numpy.ndarray
}
_ALL_METHODS = frozenset(name for names in METHODS.values() for name in names)
_DUNDERS = ("__name__", "__qualname__", "__module__", "__file__", "__doc__")
_COMMANDS = {"p": "p", "pp": "pp", "w": "where", "where": "where", "bt": "where"}
_COMMANDS.update(a="args", args="args")
# pdb's commands that move, change or end the rank, or need a prompt: attach for those.
_REFUSED_COMMANDS = (
    "!", "alias", "b", "break", "c", "cl", "clear", "commands", "condition", "cont", "continue",
    "d", "debug", "disable", "display", "down", "enable", "exit", "ignore", "interact", "j",
    "jump", "l", "list", "ll", "longlist", "n", "next", "q", "quit", "r", "restart", "return",
    "run", "s", "source", "step", "tbreak", "u", "unalias", "undisplay", "unt", "until", "up",
)  # fmt: skip
_STATEMENTS = {
    ast.Assign: "an assignment",
    ast.AugAssign: "an assignment",
    ast.AnnAssign: "an assignment",
    ast.Delete: "a del",
    ast.Import: "an import",
    ast.ImportFrom: "an import",
}


class Refused(Exception):
    """A command that ``cast`` does not run; the message says why, in one line."""


def compile_command(text):
    """Check a cast command and compile its expression.

    Used by the CLI (to refuse before asking anyone) and by the rank (which
    trusts no file).

    Args:
        text (str): ``p EXPR``, ``pp EXPR``, ``w``, ``a`` or an expression.

    Returns:
        tuple[str, types.CodeType | None]: the kind (``p``, ``pp``, ``where``,
        ``args``) and the compiled expression (None for ``where`` and ``args``).

    Raises:
        Refused: the command changes the rank, is not an expression, or
            uses something the read-only evaluation does not allow.
    """
    text = text.strip()
    word, _, rest = text.partition(" ")
    if not text:
        raise Refused("an empty command: give p EXPR, pp EXPR, w, a, or an expression")
    if word in _COMMANDS:
        kind = _COMMANDS[word]
        if kind in ("p", "pp"):
            if not rest.strip():
                raise Refused(f"{word} needs an expression: {word} EXPR")
            return kind, _compile(rest.strip())
        if rest.strip():
            raise Refused(f"{word} takes no argument here")
        return kind, None
    if word in _REFUSED_COMMANDS or text.startswith("!"):
        raise Refused(
            f"`{word}` moves, changes or ends the rank, or needs a prompt: cast runs p, pp, w and "
            "a, or an expression; use `autodbg attach` for the rest"
        )
    return "p", _compile(text)


def _compile(source):
    try:
        tree = ast.parse(source, mode="eval")
    except SyntaxError as error:
        raise Refused(_not_an_expression(source, error)) from None
    _Check().visit(tree)
    tree = ast.fix_missing_locations(_Rewrite().visit(tree))
    return compile(tree, "<autodbg cast>", "eval")


def _not_an_expression(source, error):
    try:
        statement = ast.parse(source, mode="exec").body[0]
    except (SyntaxError, IndexError):
        return f"not a Python expression: {error.msg}"
    what = _STATEMENTS.get(type(statement), "a statement")
    return f"{what}: cast evaluates expressions only and changes nothing in the ranks"


_ALLOWED = (
    ast.Expression, ast.Constant, ast.Name, ast.Load, ast.Store, ast.Attribute, ast.Subscript,
    ast.Slice, ast.Starred, ast.BinOp, ast.UnaryOp, ast.BoolOp, ast.Compare, ast.IfExp, ast.List,
    ast.Tuple, ast.Set, ast.Dict, ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp,
    ast.comprehension, ast.JoinedStr, ast.FormattedValue, ast.Call, ast.keyword, ast.operator,
    ast.unaryop, ast.cmpop, ast.boolop,
)  # fmt: skip
_NAMED = {ast.NamedExpr: "`:=` assigns", ast.Lambda: "a lambda", ast.Await: "await"}
_NAMED.update({ast.Yield: "yield", ast.YieldFrom: "yield"})


class _Check(ast.NodeVisitor):
    def generic_visit(self, node):
        if not isinstance(node, _ALLOWED):
            what = _NAMED.get(type(node), type(node).__name__)
            raise Refused(f"{what} is not allowed: cast is read-only")
        super().generic_visit(node)

    def visit_Name(self, node):
        if node.id.startswith("__") and node.id not in _DUNDERS:
            raise Refused(f"`{node.id}`: names starting with __ are not allowed")

    def visit_Attribute(self, node):
        if node.attr.startswith("__") and node.attr not in _DUNDERS:
            raise Refused(f"`.{node.attr}`: attributes starting with __ are not allowed")
        self.generic_visit(node)

    def visit_Call(self, node):
        if isinstance(node.func, ast.Name):
            self.visit(node.func)
            if node.func.id not in BUILTINS:
                raise Refused(
                    f"`{node.func.id}()` is not one of the side-effect-free builtins cast calls "
                    "(len, repr, isinstance, sorted, sum, ...)"
                )
        elif isinstance(node.func, ast.Attribute):
            self.visit(node.func)
            if node.func.attr not in _ALL_METHODS:
                raise Refused(
                    f"`.{node.func.attr}()` is not a read-only method cast calls (such as "
                    ".item(), .size(), .keys(), .get())"
                )
        else:
            raise Refused("only builtins such as len() and methods such as .item() can be called")
        if any(keyword.arg == "out" for keyword in node.keywords):
            raise Refused("out= writes into a tensor")
        for child in (*node.args, *node.keywords):
            self.visit(child)


def _helper(name, *args):
    return ast.Call(ast.Name(name, ast.Load()), list(args), [])


class _Rewrite(ast.NodeTransformer):
    # Calls, iterations and subscripts go through the runtime checks of _Namespace.
    def visit_Call(self, node):
        self.generic_visit(node)
        if isinstance(node.func, ast.Name):
            node.args[:0] = [ast.Constant(node.func.id), node.func]
            node.func = ast.Name("__autodbg_call__", ast.Load())
        else:
            node.args[:0] = [node.func.value, ast.Constant(node.func.attr)]
            node.func = ast.Name("__autodbg_method__", ast.Load())
        return node

    def visit_comprehension(self, node):
        self.generic_visit(node)
        node.iter = _helper("__autodbg_iter__", node.iter)
        return node

    def visit_Starred(self, node):
        self.generic_visit(node)
        if isinstance(node.ctx, ast.Load):
            node.value = _helper("__autodbg_iter__", node.value)
        return node

    def visit_Compare(self, node):
        self.generic_visit(node)
        node.comparators = [
            _helper("__autodbg_iter__", value) if isinstance(op, (ast.In, ast.NotIn)) else value
            for op, value in zip(node.ops, node.comparators)
        ]
        return node

    def visit_Subscript(self, node):
        self.generic_visit(node)
        return _helper("__autodbg_item__", node.value, self._index(node.slice))

    def _index(self, node):
        if isinstance(node, ast.Slice):
            none = ast.Constant(None)
            return _helper(
                "__autodbg_slice__", node.lower or none, node.upper or none, node.step or none
            )
        if isinstance(node, ast.Tuple):
            return ast.Tuple([self._index(element) for element in node.elts], ast.Load())
        return node


def _is_iterator(value):
    return hasattr(type(value), "__next__")


def _iterable(value):
    if _is_iterator(value):
        raise Refused(f"iterating a {type(value).__name__} would advance it")
    return value


def _array(value):
    torch = sys.modules.get("torch")
    numpy = sys.modules.get("numpy")
    return (torch is not None and isinstance(value, torch.Tensor)) or (
        numpy is not None and isinstance(value, numpy.ndarray)
    )


def runtime():
    import builtins

    allowed = {id(getattr(builtins, name)): name for name in BUILTINS}
    iterating = {id(getattr(builtins, name)) for name in _ITERATING}

    def call(called, function, *args, **kwargs):
        name = allowed.get(id(function))
        if name is None:
            raise Refused(f"{called} here is not the builtin")
        if name == "type" and len(args) != 1:
            raise Refused("type() with more than one argument makes a class")
        if id(function) in iterating:
            for value in args:
                _iterable(value)
        key = kwargs.get("key")
        if key is not None and id(key) not in allowed:
            raise Refused("key= may only be a builtin such as len or abs")
        return function(*args, **kwargs)

    def method(value, name, *args, **kwargs):
        kind = type(value)
        if isinstance(value, dict) and kind.__module__ == "collections":
            kind = dict  # OrderedDict, defaultdict, Counter: dict's read-only methods
        names = METHODS["array"] if _array(value) else METHODS.get(kind, ())
        if name not in names:
            raise Refused(
                f".{name}() of a {type(value).__name__} is not a read-only method cast calls"
            )
        for argument in args:
            _iterable(argument)
        return getattr(value, name)(*args, **kwargs)

    def item(value, key):
        if (
            isinstance(value, dict)
            and hasattr(type(value), "__missing__")
            and type(value).__name__ != "Counter"
            and key not in value
        ):
            raise Refused(
                f"{key!r} is not in this {type(value).__name__}; reading it would insert it"
            )
        return value[key]

    return {
        "__autodbg_call__": call,
        "__autodbg_method__": method,
        "__autodbg_iter__": _iterable,
        "__autodbg_item__": item,
        "__autodbg_slice__": slice,
    }


# -- in the rank: the stack thread's answer -------------------------------------------------

_running = None  # the evaluation thread of a command that did not end in time, while it runs


def answer(request_path):
    """Answer the cast request at ``request_path`` (``<pid>.stack.cast``), from the stack thread.

    Takes the request (removes the file), evaluates it on an ``autodbg-cast``
    thread, waits for that thread at most the request's ``limit`` seconds and
    writes ``<pid>.stack.<id>.answer``, unless the CLI's deadline (``until``,
    epoch seconds) has passed: then nobody reads it, and nothing is left.
    Blocks the stack thread at most ``limit`` seconds.

    Raises:
        OSError: the request or the answer cannot be read or written (the
            caller, :mod:`autodbg.guard`, makes that one line).
    """
    import threading

    from autodbg import registry

    request = _take(request_path)
    if request is None or time.time() > request["until"]:
        return
    result = {"id": request["id"], "answer": None, "raised": False, "error": None, "frame": None}
    if _running is not None and _running.is_alive():
        result["error"] = "the command of an earlier cast is still running here"
    else:
        worker = threading.Thread(
            target=guard.protect("the cast command's thread")(_evaluate),
            args=(request, result),
            name="autodbg-cast",
            daemon=True,
        )
        worker.start()
        worker.join(request["limit"])
        if worker.is_alive():
            _remember(worker)
            result["error"] = (
                f"the command did not end within {request['limit']:g} s (a repr or a property "
                "waiting for a lock or a device?); it goes on in a thread of its own"
            )
        elif result["answer"] is None and result["error"] is None:
            result["error"] = "autodbg failed to answer; see the process's output"
    path = f"{request_path[: -len('.cast')]}.{request['id']}.answer"
    if time.time() <= request["until"]:
        registry.write(path, result)
        if time.time() > request["until"]:  # the CLI may have looked for the last time
            registry.remove(path)


def _remember(worker):
    global _running
    _running = worker


def _take(path):
    # The request: a regular file of this user (the directory is already 0700,
    # ours), read through no symlink, removed at once (that tells the CLI it was taken).
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    try:
        with os.fdopen(fd) as source:
            info = os.fstat(source.fileno())
            if info.st_uid != os.getuid() or not stat.S_ISREG(info.st_mode):
                return None
            request = json.loads(source.read(65536))
        ident = str(request["id"])
        if not (0 < len(ident) <= 32 and all(c in "0123456789abcdef" for c in ident)):
            return None
        return {
            "id": ident,
            "command": str(request["command"]),
            "frame": None if request.get("frame") is None else str(request["frame"]),
            "limit": float(request["limit"]),
            "until": float(request["until"]),
        }
    except (ValueError, KeyError, TypeError, AttributeError):
        return None  # not a request of autodbg's CLI: nobody waits for its answer
    finally:
        os.unlink(path)


def _evaluate(request, result):
    try:
        stack, index, snapshot = _stack(request["frame"])
    except Refused as error:
        result["error"] = str(error)
        return
    frame, line = stack[index]
    code = frame.f_code
    result["frame"] = {"file": code.co_filename, "line": line, "function": code.co_name}
    try:
        kind, expression = compile_command(request["command"])
        if kind == "where":
            text = _where(stack, index)
        else:
            names = dict(snapshot if snapshot is not None else frame.f_locals)
            text = _args(code, names) if kind == "args" else _value(kind, expression, frame, names)
    except Refused as error:
        result["raised"] = True
        text = f"*** refused: {error}"
    except Exception as error:
        import traceback

        result["raised"] = True
        text = "*** " + traceback.format_exception_only(type(error), error)[-1].strip()
    if len(text) > MAX_ANSWER:
        text = f"{text[:MAX_ANSWER]}... ({len(text) - MAX_ANSWER} more characters)"
    result["answer"] = text


def _value(kind, expression, frame, names):
    namespace = dict(frame.f_globals)
    namespace.update(names)
    namespace.update(runtime())
    value = eval(expression, namespace)  # checked and rewritten by _compile
    if kind == "pp":
        import pprint

        return pprint.pformat(value)
    return repr(value)


def _args(code, names):
    # pdb's do_args: the function's parameters, in order.
    count = code.co_argcount + code.co_kwonlyargcount
    count += bool(code.co_flags & 4) + bool(code.co_flags & 8)  # CO_VARARGS, CO_VARKEYWORDS
    lines = []
    for name in code.co_varnames[:count]:
        lines.append(
            f"{name} = {names[name]!r}" if name in names else f"{name} = *** undefined ***"
        )
    return "\n".join(lines)


def _where(stack, index):
    # pdb's `where`: outermost first, the chosen frame marked with `>`.
    import linecache

    lines = []
    for position, (frame, line) in enumerate(stack):
        code = frame.f_code
        mark = "> " if position == index else "  "
        lines.append(f"{mark}{code.co_filename}({line}){code.co_name}()")
        source = linecache.getline(code.co_filename, line).strip()
        if source:
            lines.append(f"-> {source}")
    return "\n".join(lines)


def _stack(choice):
    """Return the stack a command is evaluated in, the chosen frame's index, and pdb's locals.

    Returns:
        tuple[list[tuple[types.FrameType, int]], int, dict | None]: (frame, line)
        pairs outermost first; the index of the frame to use; in a session, the
        locals pdb holds for its current frame (its snapshot, on Python < 3.13),
        else None.

    Raises:
        Refused: the main thread has ended, or no frame is named ``choice``.
    """
    import threading

    from autodbg import frames

    sessions = sys.modules.get("autodbg.session")  # not imported: no session was ever opened
    session = sessions.current() if sessions is not None else None
    snapshot = None
    if session is not None:
        stack, index = _session_stack(session)
    else:
        frame = sys._current_frames().get(threading.main_thread().ident)
        if frame is None:
            raise Refused("the main thread has ended")
        chosen = frames.program_frame(frame)
        stack = []
        while frame is not None:
            stack.append((frame, frame.f_lineno))
            frame = frame.f_back
        stack.reverse()
        index = next(i for i, (f, _) in enumerate(stack) if f is chosen)
    if choice == "innermost":
        index = len(stack) - 1
    elif choice is not None:
        named = [i for i, (f, _) in enumerate(stack) if f.f_code.co_name == choice]
        if not named:
            raise Refused(f"no frame of a function named {choice!r} in the stack")
        index = named[-1]
    if session is not None and sys.version_info < (3, 13):
        debugger = session.debugger
        if getattr(debugger, "curframe", None) is stack[index][0]:
            snapshot = getattr(debugger, "curframe_locals", None)
    return stack, index, snapshot


def _session_stack(session):
    # The debugger's own stack once a client came (pdb.Pdb.stack, curindex);
    # before, the one it opens at (autodbg.session.Session.opened_at, pdb's
    # interaction(frame, traceback) arguments, walked as pdb's get_stack does).
    debugger = session.debugger
    if debugger is not None and getattr(debugger, "curframe", None) is not None and debugger.stack:
        return list(debugger.stack), debugger.curindex
    frame, tb = session.opened_at
    stack = []
    if tb is not None and tb.tb_frame is frame:
        tb = tb.tb_next
    while frame is not None:
        stack.append((frame, frame.f_lineno))
        frame = frame.f_back
    stack.reverse()
    while tb is not None:
        stack.append((tb.tb_frame, tb.tb_lineno))
        tb = tb.tb_next
    if not stack:
        raise Refused("its debugger session is opening; try again")
    # Where the session opens (autodbg.frames.open_frame), as the debugger's setup will pick it.
    chosen = session.opened_in[0] if session.opened_in else None
    opened = [index for index, (frame, _) in enumerate(stack) if frame is chosen]
    return stack, opened[-1] if opened else len(stack) - 1
