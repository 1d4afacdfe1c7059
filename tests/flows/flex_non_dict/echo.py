"""A flex flow returning plain values: a string, or a list when asked."""


def shout(text: str, as_list: bool = False):
    if as_list:
        return [text, text.upper()]
    return text.upper() + "!"
