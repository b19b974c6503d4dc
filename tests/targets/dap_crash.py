"""Fails in f(), whose local `answer` a DAP client reads (tests/test_dap.py)."""


def f():
    answer = 41
    raise ValueError(f"the answer is not {answer}")


f()
