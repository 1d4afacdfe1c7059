"""flowport's stand-in for Azure's ``AMLResponse``."""

from flowport.serving.aml import AMLResponse

__all__ = ["AMLResponse"]
