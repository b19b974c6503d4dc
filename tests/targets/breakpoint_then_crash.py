"""Stops at breakpoint(), then, once continued, raises ValueError: a second session opens."""

step = 1
breakpoint()
step = 2
raise ValueError(f"failed at step {step}")
