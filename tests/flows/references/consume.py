from promptflow.core import tool


@tool
def consume(**kwargs) -> dict:
    return {k: {"type": type(v).__name__, "value": v} for k, v in sorted(kwargs.items())}
