"""Two pending tasks, one awaiting the other, then a breakpoint() in the main coroutine."""

import asyncio


async def fetch(event):
    await event.wait()


async def consume(producer):
    await producer


async def main():
    event = asyncio.Event()
    producer = asyncio.create_task(fetch(event), name="producer")
    consumer = asyncio.create_task(consume(producer), name="consumer")
    await asyncio.sleep(0)
    breakpoint()
    event.set()
    await consumer
    print("main done", flush=True)


asyncio.run(main())
