import asyncio
import os
import time

from promptflow.core import tool

time.sleep(float(os.environ.get("STARTUP_SECONDS") or 0))  # a slow start, for roll-out tests


@tool
async def answer(text: str, seconds: float = 0, fail: bool = False) -> dict:
    """Echo the text and the deployment's COLOR; sleep or fail on request."""
    if seconds:
        await asyncio.sleep(seconds)
    if fail:
        raise ValueError(f"asked to fail on {text!r}")
    return {"text": text, "color": os.environ.get("COLOR", "")}
