from .suffix import add_suffix

__all__ = ["add_suffix"]
