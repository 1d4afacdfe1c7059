"""The local runtime: every instance is a supervised process on this machine."""

from flowport.runtime.local.runtime import LocalRuntime

__all__ = ["LocalRuntime"]
