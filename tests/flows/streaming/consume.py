from promptflow.core import tool


@tool
def consume(words) -> dict:
    received_type = type(words).__name__
    joined = "".join(str(w) for w in words)
    return {"received_type": received_type, "joined": joined}
