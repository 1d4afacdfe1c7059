import os

from promptflow.connections import CustomConnection
from promptflow.core import tool


@tool
def greet(conn: CustomConnection, name: str) -> dict:
    """A greeting from the connection's config, which secret it was handed, and who runs it."""
    return {
        "greeting": f"{conn.configs['salutation']}, {name}!",
        "key_seen": conn.secrets["api_key"],
        "uid": os.getuid(),
    }
