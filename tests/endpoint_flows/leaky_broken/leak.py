"""Prints a secret variable while importing, then fails to load: the log tail must not show it."""

import os

from promptflow.core import tool

print(f"connecting with {os.environ.get('API_URL')}", flush=True)
raise RuntimeError(f"cannot reach {os.environ.get('API_URL')}")


@tool
def leak(text: str) -> str:
    return text
