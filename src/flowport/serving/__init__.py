"""The scoring app of one instance: serve one flow over HTTP."""

from flowport.serving.app import ScoringApp
from flowport.serving.settings import ServeSettings, SettingsError

__all__ = ["ScoringApp", "ServeSettings", "SettingsError"]
