from promptflow.core import tool


@tool
def make(x: str) -> dict:
    return {"k": f"kval-{x}", "items": [1, 2, 3]}
