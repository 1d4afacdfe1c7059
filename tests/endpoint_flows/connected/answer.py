import os

from promptflow.connections import CustomConnection
from promptflow.core import tool


@tool
def answer(text: str, conn: CustomConnection) -> dict:
    """Echo the text with what the deployment handed over: COLOR, API_TOKEN and the connection."""
    return {
        "text": text,
        "color": os.environ.get("COLOR", ""),
        "region": conn.configs.get("region", ""),
        "connection_key": conn.secrets.get("key", ""),
        "token": os.environ.get("API_TOKEN", ""),
    }
