"""Raises IndexError in f(), whose frame holds `secret`; its caller main() holds `batch`."""


def f(items):
    secret = 42
    return items[5]


def main():
    batch = [1, 2]
    return f(batch)


main()
