import asyncio

from promptflow.core import tool


@tool
async def nap(seconds: float) -> float:
    await asyncio.sleep(seconds)
    return seconds
