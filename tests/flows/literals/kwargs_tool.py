from promptflow.core import tool


@tool
def kwargs_tool(fixed: int, **kwargs) -> dict:
    values = {"fixed": fixed, **kwargs}
    return {name: {"type": type(v).__name__, "repr": repr(v)} for name, v in sorted(values.items())}
