from promptflow.core import tool


@tool
def inspect_prompt(text: str) -> dict:
    return {"type": type(text).__name__, "is_str": isinstance(text, str), "value": str(text)}
