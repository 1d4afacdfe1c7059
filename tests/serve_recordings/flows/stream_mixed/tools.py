from promptflow.core import tool


@tool
def first_word(text: str) -> str:
    return text.split()[0] if text.split() else ""
