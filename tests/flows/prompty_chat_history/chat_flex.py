from pathlib import Path

from promptflow.core import Prompty

HERE = Path(__file__).parent


def chat(question: str, chat_history: list = None) -> str:
    return Prompty.load(source=HERE / "chat.prompty")(question=question, chat_history=chat_history or [])
