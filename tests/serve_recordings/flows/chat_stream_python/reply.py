from promptflow.core import tool


@tool
def reply(question: str, chat_history: list):
    yield "You said:"
    for word in question.split():
        yield " " + word
    yield f" ({len(chat_history)} turns before)"
