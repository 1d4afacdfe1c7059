from helpers import shout
from shared_pkg import add_suffix

from promptflow.core import tool


@tool
def use_helpers(text: str) -> str:
    return add_suffix(shout(text))
