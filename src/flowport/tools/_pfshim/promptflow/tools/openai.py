"""``promptflow.tools.openai``: ``chat`` and ``completion`` for flow code, built in."""

from flowport.tools.package_tools import sync_tool

chat = sync_tool("promptflow.tools.openai.chat")
completion = sync_tool("promptflow.tools.openai.completion")

__all__ = ["chat", "completion"]
