import flowport_missing_dependency  # noqa: F401  (the load error the tests look for)
from promptflow.core import tool


@tool
def echo(text: str) -> str:
    return text
