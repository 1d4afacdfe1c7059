from promptflow.core import tool


@tool
def make_set(x: int) -> dict:
    return {"set_single": {x}}
