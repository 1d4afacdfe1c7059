from promptflow.core import tool


@tool
def make_values(x: int) -> dict:
    return {
        "tuple": (x, x + 1),
        "float": x / 4,
        "big_int": 10**20,
        "unicode": "日本語 ✓",
        "nested_tuple": [("a", x)],
        "int_keys": {1: "one", x: "x"},
    }
