from promptflow.core import tool


@tool
def shout(text: str, times: int) -> str:
    return text.upper() + "!" * times
