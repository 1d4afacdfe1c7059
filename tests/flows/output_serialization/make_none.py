from promptflow.core import tool


@tool
def make_none(x: int):
    return None
