from promptflow.core import tool


@tool
def normalize(answer: str) -> str:
    if answer == "boom":
        raise ValueError("cannot normalize boom")
    return answer.strip().lower()
