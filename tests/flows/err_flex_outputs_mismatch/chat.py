def chat(question: str, chat_history: list = None):
    for word in f"Echo {len(chat_history or [])}: {question}".split(" "):
        yield word + " "
