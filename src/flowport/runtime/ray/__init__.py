"""The Ray runtime: each instance a Ray actor running flowport's instance server (see ``runtime``)."""

from flowport.runtime.ray.runtime import RayRuntime

__all__ = ["RayRuntime"]
