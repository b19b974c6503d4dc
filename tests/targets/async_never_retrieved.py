"""A task fails while nothing awaits it; dropped, its loop reports "Task exception was never retrieved"."""

import asyncio


async def load(path):
    attempts = 3
    raise FileNotFoundError(path + f" after {attempts} attempts")


async def main():
    task = asyncio.create_task(load("weights.pt"), name="loader")
    while not task.done():
        await asyncio.sleep(0)
    del task  # the last reference: the task is collected now, and its exception reported
    print("main done", flush=True)


asyncio.run(main())
