"""The scoring app of one instance: serve one flow over HTTP.

``ScoringApp`` is imported on first use, so reading ``serving.settings`` stays cheap for
processes (the CLI) that never build an app.
"""

from typing import TYPE_CHECKING, Any

from flowport.serving.settings import ServeSettings, SettingsError

if TYPE_CHECKING:
    from flowport.serving.app import ScoringApp

__all__ = ["ScoringApp", "ServeSettings", "SettingsError"]


def __getattr__(name: str) -> Any:
    if name == "ScoringApp":
        from flowport.serving.app import ScoringApp

        return ScoringApp
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
