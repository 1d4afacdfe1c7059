import time

from promptflow.core import tool


@tool
def drip(question: str, pause: float):
    """The question's words one by one, ``pause`` seconds apart: a slow stream."""
    for index, word in enumerate(question.split()):
        if index:
            time.sleep(pause)
        yield word if index == 0 else " " + word
