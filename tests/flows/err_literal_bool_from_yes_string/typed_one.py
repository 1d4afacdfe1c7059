from promptflow.core import tool


@tool
def typed_one(value: bool):
    return {"type": type(value).__name__, "repr": repr(value)}
