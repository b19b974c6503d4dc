"""The program's own line calls the standard library, which raises: json.loads of bad input."""

import json


def parse(text):
    size = len(text)  # a local the tests read back in the program's frame
    return json.loads(text)


if __name__ == "__main__":
    parse("{bad")
