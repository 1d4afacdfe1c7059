from promptflow.core import tool


@tool
def write(topic: str, count: int, style: str) -> str:
    return f"{count} {style} lines on {topic}"
