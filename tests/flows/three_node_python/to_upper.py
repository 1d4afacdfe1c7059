from promptflow.core import tool


@tool
def to_upper(text: str) -> str:
    return text.upper()
