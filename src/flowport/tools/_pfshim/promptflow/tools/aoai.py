"""``promptflow.tools.aoai``: Azure OpenAI ``chat`` and ``completion`` for flow code, built in."""

from flowport.tools.package_tools import sync_tool

chat = sync_tool("promptflow.tools.aoai.chat")
completion = sync_tool("promptflow.tools.aoai.completion")

__all__ = ["chat", "completion"]
