from promptflow.core import tool


@tool
def classify(question: str) -> str:
    """A tiny keyword router: which topic the question is about."""
    words = question.lower()
    if any(w in words for w in ("deploy", "endpoint", "serve")):
        return "deployment"
    if any(w in words for w in ("price", "cost", "license")):
        return "licensing"
    return "general"
