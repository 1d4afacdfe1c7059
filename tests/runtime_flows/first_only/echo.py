import os

from promptflow.core import tool

# Only the first process to load this flow succeeds: a rollout that fails halfway.
try:
    os.close(os.open(os.environ["FIRST_ONLY_MARKER"], os.O_CREAT | os.O_EXCL | os.O_WRONLY))
except FileExistsError:
    raise RuntimeError("first_only: another instance loaded first") from None


@tool
def echo(text: str) -> str:
    return text
