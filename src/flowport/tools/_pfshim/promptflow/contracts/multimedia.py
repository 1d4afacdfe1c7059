"""``promptflow.contracts.multimedia``: the image type tools receive (flowport's own classes)."""

from flowport.tools.multimedia import Image, PFBytes, Text

__all__ = ["Image", "PFBytes", "Text"]
