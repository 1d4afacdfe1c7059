from promptflow.core import tool


@tool
def bools(b1: bool, b2: bool, b3: bool, b4: bool, b5: bool, b6: bool) -> dict:
    values = {"b1": b1, "b2": b2, "b3": b3, "b4": b4, "b5": b5, "b6": b6}
    return {name: {"type": type(v).__name__, "repr": repr(v)} for name, v in values.items()}
