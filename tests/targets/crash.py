"""Raises IndexError in f(), whose frame holds the local `secret`."""


def f(items):
    secret = 42
    return items[5]


def main():
    return f([1, 2])


main()
