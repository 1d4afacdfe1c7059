"""A chat flex flow whose entry is a generator: the answer streams."""

def chat(question: str, chat_history: list = None):
    for word in f"Echo {len(chat_history or [])}: {question}".split(" "):
        yield word + " "
