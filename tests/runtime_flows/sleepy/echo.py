import time

from promptflow.core import tool

print("sleepy: loading takes a while", flush=True)
time.sleep(30)  # longer than the startup deadline the test sets


@tool
def echo(text: str) -> str:
    return text
