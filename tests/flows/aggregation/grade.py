from promptflow.core import tool


@tool
def grade(normalized: str, expected: str) -> float:
    return 1.0 if normalized == expected.strip().lower() else 0.0
