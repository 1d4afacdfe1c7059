from promptflow.connections import CustomConnection
from promptflow.core import tool


def _try(action):
    """What an expression gives, or the type of the exception it raises."""
    try:
        return {"value": action()}
    except Exception as exc:  # noqa: BLE001 - the exception's type is what is recorded
        return {"raises": type(exc).__name__}


@tool
def inspect_custom(conn: CustomConnection, key: str) -> dict:
    return {
        "type": type(conn).__name__,
        "is_custom_connection": isinstance(conn, CustomConnection),
        "dict": _try(lambda: dict(conn)),
        "unpacked": _try(lambda: {**conn}),
        "keys": _try(lambda: list(conn.keys())),
        "item": _try(lambda: conn[key]),
        "secret_item": _try(lambda: conn["api_key"]),
        "missing_item": _try(lambda: conn["nope"]),
        "contains": _try(lambda: key in conn),
        "iterate": _try(lambda: list(conn)),
        "configs": _try(lambda: dict(conn.configs)),
        "secrets": _try(lambda: dict(conn.secrets)),
        "attribute": _try(lambda: conn.endpoint),
        "secret_attribute": _try(lambda: conn.api_key),
        "missing_attribute": _try(lambda: conn.nope),
        "is_secret": _try(lambda: [conn.is_secret("api_key"), conn.is_secret(key)]),
        "get": _try(lambda: conn.get(key)),
        "len": _try(lambda: len(conn)),
        "name": _try(lambda: conn.name),
        "api_version": _try(lambda: conn.configs.get("api_version")),
        "api_version_type": _try(lambda: type(conn.configs.get("api_version")).__name__),
    }
