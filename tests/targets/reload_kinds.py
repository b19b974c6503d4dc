"""Every kind of definition `reload` patches, then a crash whose session waits.

The tests copy this file, edit the copy while the session waits, `reload`,
and call the definitions at the prompt.
"""

import functools


def f(x):
    return x + 1


class Model:
    def step(self, x):
        return x * 10


def make_scaler(k):
    def scale(x):
        return x * k

    return scale


triple = make_scaler(3)


def with_defaults(x, n=1, *, m=2):
    return x + n + m


def logged(function):
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        return function(*args, **kwargs)

    return wrapper


@logged
def decorated(x):
    return x - 1


calls = 0  # module-level state: reload must not run this line again


def main():
    global calls
    calls += 1
    raise RuntimeError("crash for reload")


main()
