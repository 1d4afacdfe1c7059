"""A chat flex flow: the YAML marks the chat input, history and output; the result is a TypedDict."""

from typing import TypedDict


class Reply(TypedDict):
    answer: str
    turns: int


def chat(question: str, chat_history: list = None) -> Reply:
    turns = len(chat_history or [])
    return {"answer": f"Echo after {turns} turn(s): {question}", "turns": turns}
