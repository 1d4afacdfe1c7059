"""Shared helper used by tests/flows/additional_includes via additional_includes."""


def shout(text: str) -> str:
    return text.upper() + "!"
