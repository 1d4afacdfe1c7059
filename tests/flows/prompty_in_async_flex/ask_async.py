from pathlib import Path

from promptflow.core import AsyncPrompty, Prompty

HERE = Path(__file__).parent


async def ask(question: str):
    chat = AsyncPrompty.load(source=HERE / "chat.prompty")
    streamed = Prompty.load(source=str(HERE / "stream.prompty"))(question=question)
    return {"answer": await chat(question=question, style="patient"), "streamed": "".join(streamed)}
