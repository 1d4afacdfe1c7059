from promptflow.core import tool


@tool
def finish(text: str) -> str:
    return f"<{text}>"
