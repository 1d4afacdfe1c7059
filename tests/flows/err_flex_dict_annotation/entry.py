def my_flow(text: str) -> dict:
    return {"text": text}
