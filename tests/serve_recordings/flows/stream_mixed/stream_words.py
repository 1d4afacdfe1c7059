from promptflow.core import tool


@tool
def stream_words(text: str):
    for i, word in enumerate(text.split()):
        yield word if i == 0 else " " + word
