from promptflow.core import tool


@tool
def finalize(summary: str) -> str:
    return f"[{len(summary)} chars] {summary.splitlines()[0]}"
