from promptflow.core import tool


@tool
def echo(value):
    return value
