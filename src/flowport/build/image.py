"""The flow image's contract: where things are inside it, who runs it, how it is probed.

`flowport flow build` writes a Dockerfile from these names, the image's entry
(``flowport.runtime.container``) reads them, and Kubernetes manifests point their ports, probes
and security context at them: change one here and all three follow.
"""

from __future__ import annotations

IMAGE_PORT = 8080
"""The port the instance server listens on inside the container (``FLOWPORT_PORT`` overrides)."""
IMAGE_USER = 10001
"""The numeric user (and group) the server runs as: never root, numeric so that Kubernetes'
``runAsNonRoot`` can check it without reading the image's ``/etc/passwd``."""
IMAGE_USER_NAME = "flowport"
IMAGE_HOME = "/home/flowport"
HEALTH_PATH = "/health"
"""Liveness: 200 once the process serves."""
READY_PATH = "/ready"
"""Readiness: 200 once the flow is loaded and the instance takes requests."""
SCORE_PATH = "/score"
VENV_DIR = "/opt/flowport"
"""flowport and the flow's requirements, in a virtualenv (any base with ``python3 -m venv``)."""
FLOW_DIR = "/app/flow"
"""The flow, its ``additional_includes`` resolved."""
CONNECTION_TEMPLATES_DIR = "/app/connections"
"""Connection shapes written at build time: no secret, each secret field ``${env:NAME_FIELD}``."""
CONNECTIONS_MOUNT = "/run/flowport/connections"
"""Where a mounted connections file or folder is read from (``FLOWPORT_CONNECTIONS`` overrides);
a Kubernetes Secret mounted here with one ``<name>.yaml`` key per connection works as is."""
WRITABLE_DIR = "/tmp"
"""The one folder the server needs to write (``HOME`` and ``TMPDIR`` point here when the root
filesystem is read-only, as in the Kubernetes manifests: an emptyDir, or ``--tmpfs`` in podman)."""
IMAGE_COMMAND = (f"{VENV_DIR}/bin/python", "-m", "flowport.runtime.container")
"""The container's command: the instance server on ``IMAGE_PORT``, ``0.0.0.0``."""
HEALTH_COMMAND = (*IMAGE_COMMAND, "--check")
"""Exits 0 when ``HEALTH_PATH`` answers 200 (the image's HEALTHCHECK)."""

FLOW_ENV = "FLOWPORT_FLOW"
FLOW_NAME_ENV = "FLOWPORT_FLOW_NAME"
"""The flow's name for clients (swagger title); the image sets its source folder's name."""
PORT_ENV = "FLOWPORT_PORT"
CONNECTIONS_ENV = "FLOWPORT_CONNECTIONS"
MAX_CONCURRENT_ENV = "FLOWPORT_MAX_CONCURRENT_REQUESTS"
"""A deployment's ``request_settings.max_concurrent_requests_per_instance`` (``ServeSettings``
reads it, as for ``flowport flow serve``); not baked in: the runtime or manifest sets it."""
REQUEST_TIMEOUT_ENV = "FLOWPORT_REQUEST_TIMEOUT_MS"
"""A deployment's ``request_settings.request_timeout_ms``, read the same way."""

DEFAULT_BASE_IMAGE = "docker.io/library/python:3.12-slim-bookworm"
PIP_CONFIG_SECRET = "pip-conf"
"""Build secret: a pip.conf for the image's ``pip install`` (index URLs may carry credentials)."""
PIP_CERT_SECRET = "pip-cert"
"""Build secret: a CA bundle pip trusts (a proxy's CA); neither secret stays in the image."""
