from pathlib import Path

from promptflow.contracts.multimedia import Image

HERE = Path(__file__).parent


def run(name: str, times: int = 2):
    """Images made by flex code: pf 1.18.5 refuses an Image-typed input, but writes Image outputs."""
    data = (HERE / name).read_bytes()
    return {"image": Image(data), "copies": [Image(data, mime_type="image/jpeg")] * times, "label": str(Image(data))}
