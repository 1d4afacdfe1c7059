from pathlib import Path

from promptflow.core import Prompty

HERE = Path(__file__).parent


def ask(question: str, style: str = ""):
    chat = Prompty.load(source=HERE / "chat.prompty")
    loud = Prompty.load(
        source=HERE / "chat.prompty",
        model={"parameters": {"max_tokens": 3, "temperature": 0.5}},
    )
    inputs = {"question": question, **({"style": style} if style else {})}
    return {"answer": chat(**inputs), "short": loud(question=question)}
