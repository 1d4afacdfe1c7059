"""A flex flow whose entry is a class: __init__ takes the init config, __call__ one line."""


class Greeter:
    def __init__(self, greeting: str, times: int = 1):
        self.greeting = greeting
        self.times = times
        self.calls = 0

    def __call__(self, name: str, punctuation: str = "!"):
        self.calls += 1
        return {
            "text": " ".join([f"{self.greeting}, {name}{punctuation}"] * self.times),
            "init_types": [type(self.greeting).__name__, type(self.times).__name__],
        }
