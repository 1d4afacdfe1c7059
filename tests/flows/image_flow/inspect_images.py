from promptflow.contracts.multimedia import Image, PFBytes
from promptflow.core import tool


def _describe(value):
    if isinstance(value, Image):
        return {
            "class": type(value).__name__,
            "pfbytes": isinstance(value, PFBytes),
            "bytes": isinstance(value, bytes),
            "mime": value._mime_type,
            "size": len(value),
            "str": str(value),
            "source_url": value.source_url,
            "base64": value.to_base64(),
            "data_uri": value.to_base64(with_type=True),
        }
    if isinstance(value, list):
        return [_describe(v) for v in value]
    if isinstance(value, dict):
        return {k: _describe(v) for k, v in value.items()}
    return value


@tool
def inspect_images(image: Image, gallery: list, meta: dict) -> dict:
    return {"image": _describe(image), "gallery": _describe(gallery), "meta": _describe(meta)}
