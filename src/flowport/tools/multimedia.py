"""Images as prompt flow carries them: ``Image``, a bytes value with a mime type.

A flow input of type ``image`` (and any ``{"data:image/<type>;path|base64|url": ...}`` inside a
``list`` or ``object`` input) reaches tools as an ``Image``: read from a file (relative to the
flow folder), decoded from base64 or a ``data:`` URI, or fetched from an http(s) URL. Outputs
holding images are written the three ways prompt flow writes them: files and
``{"data:image/png;path": ...}`` references (flow test, bulk runs), ``{"data:image/png;base64":
...}`` (served answers) or ``"Image(<hash>)"`` text (run records).

URLs are fetched only from public addresses (loopback, private, link-local and reserved ranges
are refused, at every redirect), as prompt flow's own guard does, and nothing is read from a
connection whose peer is not public (a name that resolves again to another address).
``FLOWPORT_IMAGE_URL_ALLOW_PRIVATE`` lifts that for private networks one trusts.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import ipaddress
import os
import re
import socket
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlparse

import httpx

ALLOW_PRIVATE_ENV = "FLOWPORT_IMAGE_URL_ALLOW_PRIVATE"
MAX_IMAGE_BYTES = 20 * 1024 * 1024
"""The largest image fetched from a URL."""
FETCH_TIMEOUT = 30.0
MAX_REDIRECTS = 5
MEDIA_KEY = re.compile(r"^data:image/(.*);(path|base64|url)$")
_DATA_URI_PREFIX = re.compile(r"^data:image/(.*);base64")
_BASE64 = re.compile(r"^([A-Za-z0-9+/]{4})*(([A-Za-z0-9+/]{2})*(==|[A-Za-z0-9+/]=)?)?$")
_SIGNATURES: tuple[tuple[bytes, int, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", 0, "image/png"),
    (b"\xff\xd8\xff", 0, "image/jpeg"),
    (b"GIF87a", 0, "image/gif"),
    (b"GIF89a", 0, "image/gif"),
    (b"BM", 0, "image/bmp"),
    (b"II*\x00", 0, "image/tiff"),
    (b"MM\x00*", 0, "image/tiff"),
    (b"\x00\x00\x01\x00", 0, "image/x-icon"),
    (b"8BPS", 0, "image/vnd.adobe.photoshop"),
)
# Ranges prompt flow's guard refuses besides what ``ipaddress`` calls private/reserved.
_DENIED = tuple(
    ipaddress.ip_network(n)
    for n in ("168.63.129.16/32", "25.0.0.0/8", "100.64.0.0/10", "198.18.0.0/15", "2001::/32")
)


class InvalidImageInput(ValueError):
    """An image input that cannot be read; the message is prompt flow's."""


class PFBytes(bytes):
    """Bytes with a mime type (and the URL they came from, if any)."""

    def __new__(cls, value: bytes, *args: Any, **kwargs: Any) -> PFBytes:
        return super().__new__(cls, value)

    def __init__(self, value: bytes, mime_type: str, source_url: str | None = None) -> None:
        super().__init__()
        self._hash = hashlib.sha1(value).hexdigest()[:8]
        self._mime_type = mime_type.lower()
        self._source_url = source_url

    @property
    def source_url(self) -> str | None:
        return self._source_url

    def to_base64(self, with_type: bool = False) -> str:
        """The bytes in base64; ``with_type``: as a ``data:<mime>;base64,`` URI."""
        encoded = base64.b64encode(self).decode()
        return f"data:{self._mime_type};base64,{encoded}" if with_type else encoded


class Image(PFBytes):
    """An image: ``str()`` is ``Image(<first 8 hex of its SHA-1>)``, as prompt flow shows it."""

    def __init__(self, value: bytes, mime_type: str | None = None, source_url: str | None = None) -> None:
        super().__init__(value, mime_type or guess_image_mime(value) or "image/*", source_url)

    def __str__(self) -> str:
        return f"Image({self._hash})"

    __repr__ = __str__

    def serialize(self, encoder: Callable[[Image], Any] | None = None) -> Any:
        return str(self) if encoder is None else encoder(self)


class Text(str):
    """Text with annotations, as in OpenAI vision messages."""

    _annotations: list[Any] | None

    def __new__(cls, value: str, annotations: list[Any] | None = None) -> Text:
        text = super().__new__(cls, value)
        text._annotations = annotations
        return text

    @classmethod
    def deserialize(cls, data: dict[str, Any]) -> Text:
        text = data.get("text", "")
        if isinstance(text, dict):
            return cls(text.get("value", ""), text.get("annotations", []))
        return cls(text)

    def serialize(self) -> dict[str, Any]:
        if self._annotations is None:
            return {"type": "text", "text": str(self)}
        return {"type": "text", "text": {"value": str(self), "annotations": self._annotations}}


def guess_image_mime(data: bytes) -> str | None:
    """The image type its first bytes show, or None."""
    for signature, offset, mime in _SIGNATURES:
        if data[offset : offset + len(signature)] == signature:
            return mime
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[4:8] == b"ftyp" and data[8:12] in (b"avif", b"avis"):
        return "image/avif"
    if data[4:8] == b"ftyp" and data[8:12] in (b"heic", b"heix", b"mif1", b"msf1"):
        return "image/heic"
    return None


# -- reading images -------------------------------------------------------


def is_media_dict(value: Any) -> bool:
    """``{"data:image/<type>;path|base64|url": value}``."""
    return isinstance(value, dict) and len(value) == 1 and MEDIA_KEY.match(str(next(iter(value)))) is not None


def _is_base64(text: str) -> bool:
    parts = text.split(",")
    if len(parts) == 2:
        return bool(_DATA_URI_PREFIX.match(parts[0]) and _BASE64.match(parts[1]))
    return len(parts) == 1 and bool(_BASE64.match(text))


def _is_url(text: str) -> bool:
    try:
        parsed = urlparse(text)
    except ValueError:
        return False
    return bool(parsed.scheme and parsed.netloc)


def _from_base64(text: str, mime_type: str | None = None) -> Image:
    try:
        return Image(base64.b64decode(text.split(",")[-1]), mime_type)
    except binascii.Error as exc:
        raise InvalidImageInput(f"Invalid base64 image: {exc}.") from None


def _from_file(base: Path, name: str, mime_type: str | None = None, confine: bool = False) -> Image:
    """The image in file ``name`` (relative to ``base``; with ``confine``, only inside it); an
    error names the file as given."""
    if confine and not (base / name).resolve().is_relative_to(base.resolve()):
        raise InvalidImageInput(
            f"Image file '{name}' is outside the flow folder: a served flow reads image files only from "
            "its own folder; send the image as base64, a data URI or a URL."
        )
    try:
        with open(base / name, "rb") as file:
            return Image(file.read(), mime_type)
    except OSError as exc:
        raise type(exc)(exc.errno, exc.strerror, name) from None


def image_from(value: Any, base: Path, confine: bool = False) -> Image:
    """An ``image`` input as prompt flow reads it: an Image, a path (relative to ``base``), a
    URL, base64 or a ``data:`` URI, or a one-key dict naming how (``data:image/png;path``)."""
    if isinstance(value, PFBytes):
        return value if isinstance(value, Image) else Image(bytes(value), value._mime_type, value.source_url)
    if isinstance(value, dict):
        if not is_media_dict(value):
            raise InvalidImageInput(
                "Invalid image input format. The image input should be a dictionary like: "
                "{data:image/<image_type>;[path|base64|url]: <image_data>}."
            )
        return _from_dict(value, base, confine)
    if isinstance(value, str):
        if not value:
            raise InvalidImageInput("The image input should not be empty.")
        if _is_base64(value):
            return _from_base64(value)
        if _is_url(value):
            return fetch_image(value)
        return _from_file(base, value, confine=confine)
    raise InvalidImageInput(
        f"Unsupported image input type: {type(value)}. The image inputs should be a string or a dictionary."
    )


def _from_dict(value: dict[str, Any], base: Path, confine: bool = False) -> Image:
    key, data = next(iter(value.items()))
    match = MEDIA_KEY.match(key)
    assert match is not None
    mime_type, resource = f"image/{match.group(1)}", match.group(2)
    if resource == "path":
        return _from_file(base, str(data), mime_type, confine)
    if resource == "base64":
        if not isinstance(data, str) or not _is_base64(data):
            raise InvalidImageInput(f"Invalid base64 image: {data}.")
        return _from_base64(data, mime_type)
    return fetch_image(str(data), mime_type)


def images_in(value: Any, base: Path, confine: bool = False) -> Any:
    """``value`` with every media dict inside it (lists and dicts, at any depth) read as an Image."""
    if isinstance(value, list):
        return [images_in(item, base, confine) for item in value]
    if isinstance(value, dict):
        if is_media_dict(value):
            return _from_dict(value, base, confine)
        return {k: images_in(v, base, confine) for k, v in value.items()}
    return value


def data_file_paths(value: Any, folder: Path) -> Any:
    """``value`` with the files of its ``data:image/...;path`` dicts relative to ``folder``."""
    if isinstance(value, list):
        return [data_file_paths(item, folder) for item in value]
    if isinstance(value, dict):
        if is_media_dict(value):
            key, data = next(iter(value.items()))
            return {key: str(folder / str(data))} if key.endswith(";path") else value
        return {k: data_file_paths(v, folder) for k, v in value.items()}
    return value


def has_media_dict(value: Any) -> bool:
    """Whether an image as a dict (``{"data:image/png;url": ...}``) is inside ``value``, at any depth."""
    if isinstance(value, list):
        return any(has_media_dict(item) for item in value)
    if isinstance(value, dict):
        return is_media_dict(value) or any(has_media_dict(v) for v in value.values())
    return False


_PROMPTY_IMAGE = re.compile(r"^data:image/(.*);(path|base64|url):\s*(.*)$")


def prompty_image(value: Any, folder: Path, confine: bool = False) -> Any:
    """A prompty input as prompt flow reads it: ``"data:image/png;path: x.png"`` (relative to the
    prompty's ``folder``; with ``confine``, only inside it), ``";base64: ..."`` or ``";url: ..."``
    is an Image, anything else stays."""
    match = _PROMPTY_IMAGE.match(value) if isinstance(value, str) else None
    if match is None:
        return value
    mime_type, resource, data = f"image/{match.group(1)}", match.group(2), match.group(3)
    if resource == "path":
        return _from_file(folder, data, mime_type, confine)
    if resource == "base64":
        return _from_base64(data, mime_type)
    return fetch_image(data, mime_type)


def is_prompty_image(value: Any) -> bool:
    return isinstance(value, str) and value.startswith("data:image/") and bool(_PROMPTY_IMAGE.match(value))


def _private_allowed() -> bool:
    return os.environ.get(ALLOW_PRIVATE_ENV, "").lower() in ("1", "true", "yes")


def _public_address(text: str) -> bool:
    """Whether an address (as a socket gives it) may be fetched from."""
    try:
        address = ipaddress.ip_address(str(text).split("%")[0])
    except ValueError:
        return False
    address = getattr(address, "ipv4_mapped", None) or address
    return not (
        not address.is_global
        or address.is_multicast
        or any(address in network for network in _DENIED if network.version == address.version)
    )


def _public(host: str) -> bool:
    """Whether every address ``host`` resolves to may be fetched from."""
    if _private_allowed():
        return True
    try:
        infos = socket.getaddrinfo(host, None)
    except (OSError, UnicodeError):
        return False
    return bool(infos) and all(_public_address(info[4][0]) for info in infos)


def _connected_public(response: httpx.Response) -> bool:
    """Whether the address the answer came from is public: the name may have resolved to another
    address for the connection than for ``_public`` (DNS rebinding)."""
    if _private_allowed():
        return True
    stream = response.extensions.get("network_stream")
    peer = stream.get_extra_info("server_addr") if stream is not None else None
    return isinstance(peer, tuple) and bool(peer) and _public_address(peer[0])


def fetch_image(url: str, mime_type: str | None = None) -> Image:
    """GET an image from a public http(s) URL (redirects checked too), as prompt flow does."""
    refused = InvalidImageInput(f"Failed to fetch image from URL: {url}.")
    target = url
    with httpx.Client(timeout=FETCH_TIMEOUT, follow_redirects=False, trust_env=False) as client:
        for _ in range(MAX_REDIRECTS + 1):
            parsed = urlparse(target)
            if parsed.scheme not in ("http", "https") or not parsed.hostname or not _public(parsed.hostname):
                raise refused
            try:
                with client.stream("GET", target) as response:
                    if not _connected_public(response):  # nothing of its answer is read
                        raise refused
                    if response.is_redirect:
                        target = urljoin(target, response.headers.get("location", ""))
                        continue
                    body = bytearray()
                    for chunk in response.iter_bytes():
                        body += chunk
                        if len(body) > MAX_IMAGE_BYTES:
                            raise InvalidImageInput(
                                f"Failed to fetch image from URL: {url}. The image is larger than "
                                f"{MAX_IMAGE_BYTES // (1024 * 1024)} MB."
                            )
            except httpx.HTTPError as exc:
                raise InvalidImageInput(f"Failed to fetch image from URL: {url}. {exc}") from None
            if response.status_code != 200:
                text = body.decode("utf-8", "replace")
                raise InvalidImageInput(
                    f"Failed to fetch image from URL: {url}. Error code: {response.status_code}. "
                    f"Error message: {text}."
                )
            return Image(bytes(body), mime_type, source_url=url)
    raise refused


# -- writing images -------------------------------------------------------


def has_image(value: Any) -> bool:
    """Whether an ``Image`` is inside ``value``, at any depth."""
    if isinstance(value, PFBytes):
        return True
    if isinstance(value, list | tuple):
        return any(has_image(item) for item in value)
    if isinstance(value, dict):
        return any(has_image(v) for v in value.values())
    return False


def replace_images(value: Any, encode: Callable[[PFBytes], Any]) -> Any:
    """``value`` with each image replaced by ``encode(image)`` (tuples become lists)."""
    if isinstance(value, PFBytes):
        return encode(value)
    if isinstance(value, list | tuple):
        return [replace_images(item, encode) for item in value]
    if isinstance(value, dict):
        return {k: replace_images(v, encode) for k, v in value.items()}
    return value


def base64_reference(image: PFBytes) -> dict[str, str]:
    """``{"data:image/png;base64": "..."}``: how a served answer carries an image."""
    return {f"data:{image._mime_type};base64": image.to_base64()}


def file_writer(folder: Path, relative_to: Path | None = None) -> Callable[[PFBytes], dict[str, str]]:
    """An encoder writing each image to ``folder/<uuid>.<ext>`` and answering its reference:
    the path relative to ``relative_to``, or absolute. An image from a URL stays that URL."""

    def write(image: PFBytes) -> dict[str, str]:
        if image.source_url:
            return {f"data:{image._mime_type};url": image.source_url}
        extension = image._mime_type.split("/")[-1]
        name = str(uuid.uuid4()) + ("" if extension == "*" else f".{extension}")
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / name
        path.write_bytes(image)
        shown = path.relative_to(relative_to) if relative_to else path.resolve()
        return {f"data:{image._mime_type};path": shown.as_posix()}

    return write


def persist_images(value: Any, folder: Path, relative_to: Path | None = None) -> Any:
    """``value`` with each image written to a file in ``folder`` and replaced by its reference."""
    return replace_images(value, file_writer(folder, relative_to)) if has_image(value) else value
