"""A training-like loop that never fails: prints 'looping', then counts steps forever."""
import time


def train():
    step = 0
    while True:
        step += 1
        if step == 1:
            print("looping", flush=True)
        time.sleep(0.02)


train()
