"""AUTODBG_RELOAD=watch: prints value() each time a save changes it; ends when it is 3 (60 s at most)."""

import time


def value():
    return 1


print("watching", flush=True)
seen = value()
deadline = time.monotonic() + 60
while seen != 3:
    if time.monotonic() > deadline:
        raise SystemExit(f"value() is still {seen}")
    if value() != seen:
        seen = value()
        print("value is", seen, flush=True)
    time.sleep(0.02)
