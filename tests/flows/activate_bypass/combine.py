from promptflow.core import tool


@tool
def combine(a: str, b: str) -> str:
    return f"a={a!r} b={b!r}"
