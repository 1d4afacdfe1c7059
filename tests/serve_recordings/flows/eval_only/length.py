from promptflow.core import tool


@tool
def length(text: str) -> int:
    return len(text)
