from promptflow.core import tool


@tool
def stream_then_fail(text: str):
    for i, word in enumerate(text.split()):
        yield word if i == 0 else " " + word
    raise ValueError("boom after streaming")
