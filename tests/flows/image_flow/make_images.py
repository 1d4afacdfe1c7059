from promptflow.contracts.multimedia import Image
from promptflow.core import tool


@tool
def make_images(image: Image) -> dict:
    """Images made in code: one from bytes with a mime type, one whose type is guessed."""
    made = Image(bytes(image), mime_type="image/jpeg")
    guessed = Image(bytes(image))
    return {"made": made, "guessed": guessed, "both": [made, image], "text": "done"}
