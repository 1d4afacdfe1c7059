"""A flex flow returning a dataclass: prompt flow gives its fields as the outputs."""

from dataclasses import dataclass


@dataclass
class Score:
    label: str
    value: float
    reasons: list


def score(text: str) -> Score:
    value = round(len(text) / 10, 2)
    return Score(label="long" if value > 1 else "short", value=value, reasons=text.split())
