from promptflow.core import tool


@tool
def after(value: str, mode: str) -> str:
    return f"after({value!r}, mode={mode!r})"
