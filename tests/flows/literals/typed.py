from promptflow.core import tool


def _describe(v):
    return {"type": type(v).__name__, "repr": repr(v)}


@tool
def typed(i: int, f: float, b: bool, lst: list, d: dict, s: str) -> dict:
    return {
        "i": _describe(i),
        "f": _describe(f),
        "b": _describe(b),
        "lst": _describe(lst),
        "d": _describe(d),
        "s": _describe(s),
    }
