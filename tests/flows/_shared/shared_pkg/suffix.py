def add_suffix(text: str) -> str:
    return text + " (from shared_pkg)"
