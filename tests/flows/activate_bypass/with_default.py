from promptflow.core import tool


@tool
def with_default(base: str, x: str = "DEFAULT-X") -> str:
    return f"x={x!r} base={base!r}"
