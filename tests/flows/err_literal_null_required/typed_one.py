from promptflow.core import tool


@tool
def typed_one(value: str):
    return {"type": type(value).__name__, "repr": repr(value)}
