from promptflow import tool


@tool
def prepare(text: str) -> str:
    return text.strip()
