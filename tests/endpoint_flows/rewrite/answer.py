import os

from promptflow.core import tool


@tool
def answer(text: str) -> dict:
    """The probe flow rewritten: the same answers, except text starting with "new" comes back upper case."""
    return {"text": text.upper() if text.startswith("new") else text, "color": os.environ.get("COLOR", "")}
