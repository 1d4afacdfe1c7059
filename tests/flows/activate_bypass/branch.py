from promptflow.core import tool


@tool
def branch(label: str, mode: str) -> str:
    return f"{label}:{mode}"
