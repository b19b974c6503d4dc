"""Crashes in main(); helper() reaches breakpoint(): `p helper()` at the post-mortem prompt nests."""


def helper():
    inner = 42
    breakpoint()
    return inner + 1


def main():
    value = 7
    raise ValueError(f"boom {value}")


main()
