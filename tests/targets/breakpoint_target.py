"""Stops at breakpoint() with a local `counter`, then prints 'after breakpoint'."""

counter = 3
breakpoint()
print(f"after breakpoint {counter}", flush=True)
