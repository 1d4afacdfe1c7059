from promptflow.core import tool


@tool
async def agen(text: str):
    for word in text.split():
        yield word.upper() + ";"
