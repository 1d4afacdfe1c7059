from promptflow import tool


class CustomToolError(Exception):
    pass


@tool
def check(text: str) -> str:
    if text == "bad":
        raise ValueError("bad value")
    if text == "custom":
        raise CustomToolError("custom failure with 'quotes'")
    if text == "key":
        return {}["missing"]
    if text == "zero":
        return str(1 / 0)
    return f"checked:{text}"
