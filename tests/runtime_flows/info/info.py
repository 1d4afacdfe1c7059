import asyncio
import os
import sys

from promptflow.core import tool


@tool
async def info(text: str, seconds: float) -> dict:
    """Echo the text (after a nap) with what identifies the process that answered."""
    await asyncio.sleep(seconds)
    return {"echoed": text, "flavor": os.environ.get("FLAVOR", ""), "pid": os.getpid(), "prefix": sys.prefix}
