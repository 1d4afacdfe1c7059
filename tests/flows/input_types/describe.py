from promptflow.core import tool


@tool
def describe(i, d, b, s, l, o, color, req) -> dict:  # noqa: E741
    values = {"i": i, "d": d, "b": b, "s": s, "l": l, "o": o, "color": color, "req": req}
    return {name: {"type": type(v).__name__, "repr": repr(v)} for name, v in values.items()}
