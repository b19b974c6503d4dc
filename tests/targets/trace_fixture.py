"""Functions traced by tests/test_trace.py and benchmarks/trace.py (AUTODBG_TRACE=trace_fixture:...)."""


def compute(n, label="sum"):
    total = 0
    squares = []
    for i in range(n):
        square = i * i
        if square % 2:
            total += square
        squares.append(square)
    name = f"{label}:{total}"
    try:
        {}["missing"]
    except KeyError:
        total = -total
    return name, total, squares


def fib(n):
    if n < 2:
        return n
    return fib(n - 1) + fib(n - 2)


def loop(n):
    total = 0
    for i in range(n):
        x = i * 3
        total += x
    return total


def fail(n):
    values = list(range(n))
    count = len(values)
    ratio = sum(values) / count
    return ratio


def untraced(n):
    total = 0
    for i in range(n):
        x = i * 3
        total += x
    return total
