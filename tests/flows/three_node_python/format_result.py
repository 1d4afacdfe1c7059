from promptflow.core import tool


@tool
def format_result(text: str, count: int) -> str:
    return f"{text} ({count} words)"
