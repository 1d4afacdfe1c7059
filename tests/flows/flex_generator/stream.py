"""A flex flow whose __call__ is a generator: its chunks stream."""


class Words:
    def __init__(self, separator: str = " "):
        self.separator = separator

    def __call__(self, text: str):
        for index, word in enumerate(text.split()):
            yield (self.separator if index else "") + word
