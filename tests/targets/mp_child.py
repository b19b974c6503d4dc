"""A multiprocessing child (start method from argv[1]) raises ZeroDivisionError in work(); the parent goes on."""

import multiprocessing
import sys


def work(items):
    total = sum(items)  # a local the tests read back in the failing frame
    return total / (len(items) - 3)


if __name__ == "__main__":
    child = multiprocessing.get_context(sys.argv[1]).Process(target=work, args=([1, 2, 3],))
    child.start()
    child.join()
    print(f"parent: child exit code {child.exitcode}", flush=True)
