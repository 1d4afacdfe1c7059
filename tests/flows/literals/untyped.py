from promptflow.core import tool


@tool
def untyped(a, b, c, d, e, f, h, i, j, k) -> dict:
    values = {"a": a, "b": b, "c": c, "d": d, "e": e, "f": f, "h": h, "i": i, "j": j, "k": k}
    return {name: {"type": type(v).__name__, "repr": repr(v)} for name, v in values.items()}
