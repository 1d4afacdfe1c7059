"""``promptflow.tools.embedding``: ``embedding`` for flow code, built in."""

from flowport.tools.package_tools import sync_tool

embedding = sync_tool("promptflow.tools.embedding.embedding")

__all__ = ["embedding"]
