from promptflow.core import tool


@tool
def answer(question: str, style: str):
    words = question.split()
    if style == "loud":
        words = [w.upper() for w in words]
    for index, word in enumerate(words):
        yield word if index == 0 else " " + word
