"""A flex flow whose entry is a plain function with typed, defaulted parameters."""

import os


def my_flow(question: str, count: int = 2, loud: bool = False, ratio: float = 0.5, tags: list = None):
    words = question.split()[:count]
    answer = " ".join(words)
    return {
        "answer": answer.upper() if loud else answer,
        "count": count,
        "types": [type(v).__name__ for v in (question, count, loud, ratio, tags)],
        "ratio": ratio,
        "tags": tags,
        "greeting": os.environ.get("FLEX_GREETING"),
    }
