"""The engine benchmark's flex flow: a plain function doing a little text processing per line."""

import re
from collections import Counter
from typing import TypedDict

WORD = re.compile(r"[a-z0-9']+")
STOP_WORDS = frozenset({"a", "an", "and", "by", "how", "i", "in", "is", "it", "of", "the", "to", "what"})


class Analysis(TypedDict):
    words: int
    keywords: list[str]
    slug: str


def analyse(text: str, top: int = 3) -> Analysis:
    """Words of ``text``: how many, the ``top`` most frequent non-stop words, and a slug."""
    words = WORD.findall(text.lower())
    counts = Counter(w for w in words if w not in STOP_WORDS)
    keywords = [word for word, _ in counts.most_common(top)]
    return Analysis(words=len(words), keywords=keywords, slug="-".join(words[:6]))
