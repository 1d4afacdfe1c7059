from promptflow.core import tool


@tool
def make_number(x: int) -> int:
    return x * 21
