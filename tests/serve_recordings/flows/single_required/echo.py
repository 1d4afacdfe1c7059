from promptflow.core import tool


@tool
def echo(text) -> dict:
    return {"value": text, "type": type(text).__name__}
