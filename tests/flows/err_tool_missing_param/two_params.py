from promptflow.core import tool


@tool
def two_params(a: str, b: str) -> str:
    return a + b
