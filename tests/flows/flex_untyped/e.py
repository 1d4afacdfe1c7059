"""A flex flow whose parameters have no annotations: their values are read as JSON when they parse."""


def f(x, y=3):
    return {"x": [type(x).__name__, x], "y": [type(y).__name__, y]}
