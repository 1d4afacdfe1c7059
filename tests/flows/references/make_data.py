from promptflow.core import tool


@tool
def make_data(x: str) -> dict:
    return {
        "a": {"b": f"deep-{x}"},
        "k": "kval",
        "n": {"key with space": "spaced", "k.dot": "dotted"},
        "items": [10, 20, {"name": "third"}],
        "matrix": [[1, 2], [3, 4]],
    }
