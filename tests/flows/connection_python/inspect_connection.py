import os

from promptflow.connections import OpenAIConnection
from promptflow.core import tool


@tool
def inspect_connection(conn: OpenAIConnection, text: str) -> dict:
    return {
        "type": type(conn).__name__,
        "is_openai_connection": isinstance(conn, OpenAIConnection),
        "api_key": conn.api_key,
        "base_url_ends_with_v1": conn.base_url.endswith("/v1"),
        "env_key": os.environ.get("FLOWPORT_CONN_KEY"),
        "env_base_is_set": os.environ.get("FLOWPORT_CONN_BASE") is not None,
        "text": text,
    }
