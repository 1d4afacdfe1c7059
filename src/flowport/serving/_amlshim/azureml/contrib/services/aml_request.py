"""flowport's stand-in for Azure's ``AMLRequest`` and ``@rawhttp``."""

from flowport.serving.aml import AMLRequest, rawhttp

__all__ = ["AMLRequest", "rawhttp"]
