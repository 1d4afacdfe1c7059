from promptflow.core import tool


@tool
def make(kind: str) -> dict:
    if kind == "nan":
        return {"x": float("nan")}
    if kind == "inf":
        return {"x": float("inf")}
    return {"x": 1.5, "big": 10**20, "neg_zero": -0.0, "tiny": 1e-7}
