"""Calls that fail until their code is fixed: AUTODBG_CATCH, @autodbg.catch, ``retry`` and ``return VALUE``.

``RETRY_CALL`` picks the call: ``function`` (catch ``__main__:compute``),
``method`` (catch ``__main__:Model.step``) or ``decorated`` (``@autodbg.catch``).
The program prints ``result <value>`` and exits 0 once the call returns.
"""

import os

import autodbg


def compute(x, y=1):
    total = x + y
    return total / 0  # FIX


class Model:
    def step(self, x):
        return compute(x) + 1


@autodbg.catch
def decorated(x):
    return compute(x) - 1


CALLS = {"function": compute, "method": Model().step, "decorated": decorated}
print("result", CALLS[os.environ["RETRY_CALL"]](4), flush=True)
