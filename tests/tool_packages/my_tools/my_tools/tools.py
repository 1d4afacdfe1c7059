"""Three tools, one of each kind prompt flow's packages ship."""

import json
import urllib.request

from jinja2 import Template
from promptflow.connections import CustomConnection, OpenAIConnection
from promptflow.contracts.types import PromptTemplate
from promptflow.core import ToolProvider, tool


@tool
def greet(name: str, times: int = 1, punctuation: str = "!") -> str:
    """A function tool."""
    return " ".join([f"Hello {name}{punctuation}"] * times)


class Vault(ToolProvider):
    """A class tool: ``__init__``'s inputs (a connection) come from the node's literal inputs."""

    def __init__(self, connection: CustomConnection, prefix: str = "vault"):
        super().__init__()
        self.connection = connection
        self.prefix = prefix

    @tool
    def lookup(self, key: str, upper: bool = False) -> dict:
        value = str(self.connection.configs.get(key, "missing"))
        return {
            "prefix": self.prefix,
            "key": key,
            "value": value.upper() if upper else value,
            "secret_length": len(self.connection.secrets["api_key"]),
            "as_dict": sorted(dict(self.connection)),
        }


@tool
def my_llm(
    connection: OpenAIConnection, prompt: PromptTemplate, model: str, temperature: float = 0.5, **kwargs
):
    """A custom_llm tool: renders its prompt template itself and asks the model."""
    rendered = Template(prompt, trim_blocks=True, keep_trailing_newline=True).render(**kwargs)
    body = {"model": model, "temperature": temperature, "messages": [{"role": "user", "content": rendered}]}
    request = urllib.request.Request(
        connection.base_url.rstrip("/") + "/chat/completions",
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json", "authorization": f"Bearer {connection.api_key}"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        answer = json.load(response)
    return {
        "text": answer["choices"][0]["message"]["content"],
        "prompt_type": type(prompt).__name__,
        "template": str(prompt),
        "extra_inputs": sorted(kwargs),
    }
