"""A flex flow whose entry is an async function awaiting other coroutines."""

import asyncio


async def _double(x: int) -> int:
    await asyncio.sleep(0)
    return x * 2


async def run(numbers: list, offset: int = 0):
    doubled = await asyncio.gather(*(_double(n) for n in numbers))
    return {"doubled": [d + offset for d in doubled], "total": sum(doubled) + offset}


async def stream_numbers(numbers: list):
    """An async generator entry (``--flow steps:stream_numbers``): its items stream."""
    for number in numbers:
        await asyncio.sleep(0)
        yield f"<{number * 2}>"
