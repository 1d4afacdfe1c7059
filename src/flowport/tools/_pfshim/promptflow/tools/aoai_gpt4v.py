"""``promptflow.tools.aoai_gpt4v``: the Azure OpenAI vision chat tool for flow code."""

from flowport.connections import AzureOpenAIConnection
from promptflow.tools.openai_gpt4v import _VisionChat


class AzureOpenAI(_VisionChat):
    """``AzureOpenAI(connection).chat(prompt=..., deployment_name=..., **inputs)``."""

    connection_type = AzureOpenAIConnection


__all__ = ["AzureOpenAI"]
