from promptflow.core import tool


@tool
def stream_items(text: str):
    for i, word in enumerate(text.split()):
        yield {"i": i, "w": word}
