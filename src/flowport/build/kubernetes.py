"""Kubernetes manifests for an endpoint or one deployment, from plain data.

The control plane gathers the endpoint and its deployments (``ControlPlane.export``: Azure's
YAML fields, keys and connections in clear) and hands that document here; this module only
turns it into objects a cluster admin can ``kubectl apply``:

- per deployment: a Deployment of the flow's image (its contract in ``build/image.py``; probes,
  resources, variables and request settings from the YAML), its Service, a Secret for its
  secret variables and one for its connections (one ``<name>.yaml`` key per connection, mounted
  where the image reads them), a
  HorizontalPodAutoscaler when ``scale_settings`` says ``target_utilization``, and a
  PodDisruptionBudget;
- per endpoint: the gateway (``flowport gateway``) as a Deployment and Service named after the
  endpoint, its routing table in a ConfigMap, the endpoint's keys in a Secret, a
  PodDisruptionBudget.

Secret values only ever appear in Secret objects. Every pod runs as a non-root user with a
read-only root filesystem, no capabilities and no privilege escalation.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from flowport.build.image import (
    CONNECTIONS_MOUNT,
    HEALTH_PATH,
    IMAGE_COMMAND,
    IMAGE_PORT,
    IMAGE_USER,
    MAX_CONCURRENT_ENV,
    READY_PATH,
    REQUEST_TIMEOUT_ENV,
    WRITABLE_DIR,
)

# The image a deployment runs is the one ``flowport online-deployment build-image`` makes: its
# port, user, command, probe paths, connection mount and variables come from build/image.py.

# -- the gateway (``flowport gateway``) ---------------------------------------------------------

GATEWAY_ROUTES_DIR = "/etc/flowport/gateway"
GATEWAY_ROUTES_FILE = "routes.json"
GATEWAY_KEYS_DIR = "/etc/flowport/keys"
GATEWAY_HEALTH_PATH = "/health"
GATEWAY_SERVICE_PORT = 80

KUBERNETES_VERSION = "1.30"
"""The API versions used here (apps/v1, autoscaling/v2, policy/v1) are those of 1.23 and later;
tests validate against this version's schemas."""

DEFAULT_RESOURCES = {
    "requests": {"cpu": "100m", "memory": "2Gi"},
    "limits": {"cpu": "2", "memory": "2Gi"},
}
"""Azure's ``defaultinstancetype`` for Kubernetes online deployments, used when the YAML has no
``resources``."""
GATEWAY_RESOURCES = {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}}

LABEL_ENDPOINT = "flowport.dev/endpoint"
LABEL_DEPLOYMENT = "flowport.dev/deployment"
COMPONENT = "app.kubernetes.io/component"

QUANTITY = re.compile(r"^[+-]?((\d+(\.\d*)?)|(\.\d+))(([KMGTPE]i)|[numkMGTPE]|([eE][+-]?\d+))?$")
"""A Kubernetes resource quantity (apimachinery's grammar): 500m, 2, 1.5Gi, 1e3."""
SECRET_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
MAX_NAME = 63
NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


class ExportError(Exception):
    """The endpoint or a deployment cannot be expressed as manifests; the message says how to fix it."""


@dataclass(frozen=True)
class ExportOptions:
    namespace: str | None = None
    """Written into every object; None: ``kubectl apply -n`` (or the context) decides."""
    images: Mapping[str, str] = field(default_factory=dict)
    """Image per deployment name; a deployment not named gets ``default_image``."""
    gateway_image: str | None = None
    """None: the image of the first deployment (every flowport image holds the gateway)."""
    gateway_replicas: int = 2


# -- names and labels -------------------------------------------------------------------------


def object_name(*parts: str) -> str:
    """A DNS-1035 label from name parts: lower case, at most 63 characters (a hash keeps it unique)."""
    name = "-".join(parts).lower()
    if len(name) <= MAX_NAME:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[: MAX_NAME - 9].rstrip('-')}-{digest}"


def default_image(endpoint: str, deployment: str, model: str) -> str:
    """``flowport-<endpoint>-<deployment>:<model version>``: the tag ``build-image`` gives a deployment."""
    version = model.rpartition(":")[2] if ":" in model else "latest"
    return f"{object_name('flowport', endpoint, deployment)}:{version}"


def _labels(endpoint: str, component: str, deployment: str | None = None) -> dict[str, str]:
    labels = {
        "app.kubernetes.io/name": "flowport",
        "app.kubernetes.io/part-of": endpoint,
        COMPONENT: component,
        "app.kubernetes.io/managed-by": "flowport",
        LABEL_ENDPOINT: endpoint,
    }
    if deployment is not None:
        labels["app.kubernetes.io/instance"] = f"{endpoint}-{deployment}"[:MAX_NAME].rstrip("-")
        labels[LABEL_DEPLOYMENT] = deployment
    return labels


def _selector(labels: Mapping[str, str]) -> dict[str, str]:
    keys = (LABEL_ENDPOINT, COMPONENT, LABEL_DEPLOYMENT)
    return {k: labels[k] for k in keys if k in labels}


def _metadata(name: str, labels: Mapping[str, str], options: ExportOptions) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name}
    if options.namespace:
        metadata["namespace"] = options.namespace
    metadata["labels"] = dict(labels)
    return metadata


def _secret(
    name: str, labels: Mapping[str, str], values: Mapping[str, str], options: ExportOptions
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _metadata(name, labels, options),
        "type": "Opaque",
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in values.items()},
    }


def _pdb(name: str, labels: Mapping[str, str], options: ExportOptions) -> dict[str, Any]:
    """At most one pod down at a time for voluntary disruptions (a drain never blocks)."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(name, labels, options),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": _selector(labels)}},
    }


def _pod_security() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": IMAGE_USER,
        "runAsGroup": IMAGE_USER,
        "fsGroup": IMAGE_USER,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _container_security() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }


def _http_probe(path: str, settings: Mapping[str, Any], liveness: bool) -> dict[str, Any]:
    """Azure's probe settings (seconds) as a Kubernetes probe on the container's http port."""
    return {
        "httpGet": {"path": path, "port": "http"},
        "initialDelaySeconds": int(settings.get("initial_delay", 10)),
        "periodSeconds": int(settings.get("period", 10)),
        "timeoutSeconds": int(settings.get("timeout", 2)),
        # Kubernetes accepts only 1 for a liveness probe's success threshold
        "successThreshold": 1 if liveness else int(settings.get("success_threshold", 1)),
        "failureThreshold": int(settings.get("failure_threshold", 30)),
    }


def _service(
    name: str, labels: Mapping[str, str], port: int, options: ExportOptions, headless: bool = False
) -> dict[str, Any]:
    """A ClusterIP Service; ``headless``: its name resolves to the ready pods (the gateway balances)."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(name, labels, options),
        "spec": {
            "type": "ClusterIP",
            **({"clusterIP": "None"} if headless else {}),
            "selector": _selector(labels),
            "ports": [{"name": "http", "port": port, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def _workload(
    name: str,
    labels: Mapping[str, str],
    pod: Mapping[str, Any],
    replicas: int | None,
    options: ExportOptions,
) -> dict[str, Any]:
    """A Deployment that rolls one pod at a time, the new one ready before the old one goes."""
    spec: dict[str, Any] = {}
    if replicas is not None:  # None: a HorizontalPodAutoscaler owns the count
        spec["replicas"] = replicas
    spec.update(
        {
            "selector": {"matchLabels": _selector(labels)},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {"metadata": {"labels": dict(labels)}, "spec": dict(pod)},
        }
    )
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(name, labels, options),
        "spec": spec,
    }


# -- a deployment ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Scaling:
    """``scale_settings: type: target_utilization`` (Azure's defaults: 1, 1, 70)."""

    min_instances: int
    max_instances: int
    target_utilization_percentage: int
    cooldown_seconds: int | None = None
    """flowport's ``cooldown_seconds``: the HPA's scale-down stabilization window when given."""


def scaling(document: Mapping[str, Any]) -> Scaling | None:
    """The deployment's autoscaling, or None for ``type: default`` (``instance_count`` pods)."""
    where = f"deployment {document['name']!r}: scale_settings"
    settings = document.get("scale_settings")
    if settings is None:
        return None
    if not isinstance(settings, Mapping):
        raise ExportError(f"{where} must be a mapping with a type (default or target_utilization)")
    kind = str(settings.get("type", "default")).lower()
    if kind == "default":
        return None
    if kind != "target_utilization":
        raise ExportError(f"{where}.type must be default or target_utilization, got {kind!r}")

    def number(key: str, default: int, low: int, high: int) -> int:
        value = settings.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ExportError(f"{where}.{key} must be a whole number from {low} to {high}, got {value!r}")
        return value

    result = Scaling(
        number("min_instances", 1, 1, 1000),
        number("max_instances", 1, 1, 1000),
        number("target_utilization_percentage", 70, 1, 100),
        _cooldown(settings.get("cooldown_seconds"), where),
    )
    if result.max_instances < result.min_instances:
        raise ExportError(
            f"{where}.max_instances ({result.max_instances}) is below min_instances ({result.min_instances})"
        )
    return result


def _cooldown(value: Any, where: str) -> int | None:
    """``cooldown_seconds`` as whole seconds (Kubernetes allows up to an hour), or None."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 3600:
        raise ExportError(
            f"{where}.cooldown_seconds must be a number of seconds from 0 to 3600, got {value!r}"
        )
    return math.ceil(value)


def resources(document: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    """``resources: {requests, limits}`` of the YAML as Kubernetes quantities, else Azure's default."""
    given = document.get("resources")
    if given is None:
        return {part: dict(values) for part, values in DEFAULT_RESOURCES.items()}
    where = f"deployment {document['name']!r}: resources"
    if not isinstance(given, Mapping):
        raise ExportError(f"{where} must be a mapping with requests and/or limits")
    result: dict[str, dict[str, str]] = {}
    for part, values in given.items():
        if part not in ("requests", "limits"):
            raise ExportError(f"{where}.{part} is not requests or limits")
        if not isinstance(values, Mapping):
            raise ExportError(f"{where}.{part} must map resource names to quantities (cpu: 500m)")
        for resource, quantity in values.items():
            text = str(quantity).strip() if not isinstance(quantity, bool) else ""
            if not QUANTITY.match(text):
                raise ExportError(
                    f"{where}.{part}.{resource}: {quantity!r} is not a Kubernetes quantity "
                    "(e.g. 500m or 0.5 for CPU, 512Mi or 2Gi for memory)"
                )
            result.setdefault(part, {})[str(resource)] = text
    return result


def _environment(
    document: Mapping[str, Any], secret_name: str
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """The container's env list and the values that go in the deployment's Secret."""
    name = document["name"]
    settings = document.get("request_settings") or {}
    plain: dict[str, str] = {
        "HOME": WRITABLE_DIR,
        "TMPDIR": WRITABLE_DIR,
        "PYTHONDONTWRITEBYTECODE": "1",
        MAX_CONCURRENT_ENV: str(settings.get("max_concurrent_requests_per_instance", 10)),
        REQUEST_TIMEOUT_ENV: str(settings.get("request_timeout_ms", 5000)),
    }
    secret_names = set(document.get("secret_environment_variables") or ())
    secret: dict[str, str] = {}
    for key, value in (document.get("environment_variables") or {}).items():
        if not ENV_NAME.match(key):
            raise ExportError(
                f"deployment {name!r}: environment variable {key!r} is not a name Kubernetes accepts "
                "(letters, digits, '_', '-', '.'; not starting with a digit): rename it"
            )
        if key in secret_names:
            secret[key] = str(value)
            plain.pop(key, None)
        else:
            plain[key] = str(value)
    env: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in plain.items()]
    env += [{"name": key, "valueFrom": {"secretKeyRef": {"name": secret_name, "key": key}}} for key in secret]
    return env, secret


def connection_files(document: Mapping[str, Any]) -> dict[str, str]:
    """``{<name>.yaml: the connection's YAML}``: the Secret's keys, as the image reads them from
    its connections folder (``document["connections"]`` maps names to YAML mappings, secrets in clear)."""
    files: dict[str, str] = {}
    for name, spec in sorted((document.get("connections") or {}).items()):
        key = f"{name}.yaml"
        if not SECRET_KEY.match(key):
            raise ExportError(
                f"deployment {document['name']!r}: connection {name!r} cannot name a Secret key "
                "(letters, digits, '-', '_', '.'): rename the connection"
            )
        files[key] = yaml.safe_dump({**spec, "name": name}, sort_keys=False, allow_unicode=True)
    return files


def deployment_objects(
    endpoint: str, document: Mapping[str, Any], options: ExportOptions
) -> list[dict[str, Any]]:
    """The objects of one deployment: Secrets, Deployment, Service, autoscaler, disruption budget,
    and the network policy that lets only the endpoint's gateway in."""
    name = document["name"]
    labels = _labels(endpoint, "deployment", name)
    base = object_name(endpoint, name)
    env_secret, connections_secret = (
        object_name(endpoint, name, "env"),
        object_name(endpoint, name, "connections"),
    )
    env, secret_values = _environment(document, env_secret)
    auto = scaling(document)
    objects: list[dict[str, Any]] = []
    if secret_values:
        objects.append(_secret(env_secret, labels, secret_values, options))
    mounts: list[dict[str, Any]] = [{"name": "tmp", "mountPath": WRITABLE_DIR}]
    volumes: list[dict[str, Any]] = [{"name": "tmp", "emptyDir": {}}]
    connections = connection_files(document)
    if connections:
        objects.append(_secret(connections_secret, labels, connections, options))
        mounts.append({"name": "connections", "mountPath": CONNECTIONS_MOUNT, "readOnly": True})
        volumes.append(
            {"name": "connections", "secret": {"secretName": connections_secret, "defaultMode": 0o440}}
        )
    timeout_ms = int((document.get("request_settings") or {}).get("request_timeout_ms", 5000))
    container = {
        "name": "instance",
        "image": options.images.get(name) or default_image(endpoint, name, str(document.get("model", ""))),
        "command": list(IMAGE_COMMAND),
        "ports": [{"name": "http", "containerPort": IMAGE_PORT, "protocol": "TCP"}],
        "env": env,
        "resources": resources(document),
        "livenessProbe": _http_probe(HEALTH_PATH, document.get("liveness_probe") or {}, liveness=True),
        "readinessProbe": _http_probe(READY_PATH, document.get("readiness_probe") or {}, liveness=False),
        "securityContext": _container_security(),
        "volumeMounts": mounts,
    }
    pod = {
        "automountServiceAccountToken": False,  # flow code is untrusted: no API credentials
        "securityContext": _pod_security(),
        # in-flight requests finish (up to the request timeout) before the pod is killed
        "terminationGracePeriodSeconds": max(30, timeout_ms // 1000 + 10),
        "containers": [container],
        "volumes": volumes,
    }
    replicas = None if auto is not None else int(document.get("instance_count", 1))
    objects.append(_workload(base, labels, pod, replicas, options))
    objects.append(_service(base, labels, IMAGE_PORT, options, headless=True))
    if auto is not None:
        objects.append(
            {
                "apiVersion": "autoscaling/v2",
                "kind": "HorizontalPodAutoscaler",
                "metadata": _metadata(base, labels, options),
                "spec": {
                    "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": base},
                    "minReplicas": auto.min_instances,
                    "maxReplicas": auto.max_instances,
                    "metrics": [
                        {
                            "type": "Resource",
                            "resource": {
                                "name": "cpu",
                                "target": {
                                    "type": "Utilization",
                                    "averageUtilization": auto.target_utilization_percentage,
                                },
                            },
                        }
                    ],
                    **_behavior(auto),
                },
            }
        )
    objects.append(_pdb(base, labels, options))
    objects.append(_only_from_gateway(base, endpoint, labels, options))
    return objects


def _only_from_gateway(
    name: str, endpoint: str, labels: Mapping[str, str], options: ExportOptions
) -> dict[str, Any]:
    """Ingress to a deployment's pods only from its endpoint's gateway pods, on the http port: the
    gateway checks keys, the instances do not (where the cluster's network plugin enforces
    NetworkPolicy; the kubelet's probes come from the node and are not affected)."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _metadata(name, labels, options),
        "spec": {
            "podSelector": {"matchLabels": _selector(labels)},
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": [{"podSelector": {"matchLabels": _selector(_labels(endpoint, "gateway"))}}],
                    "ports": [{"port": "http", "protocol": "TCP"}],
                }
            ],
        },
    }


def _behavior(auto: Scaling) -> dict[str, Any]:
    if auto.cooldown_seconds is None:
        return {}
    return {"behavior": {"scaleDown": {"stabilizationWindowSeconds": auto.cooldown_seconds}}}


# -- the endpoint's gateway -----------------------------------------------------------------


def gateway_routes(endpoint: Mapping[str, Any], deployments: list[Mapping[str, Any]]) -> dict[str, Any]:
    """What ``flowport gateway --routes`` reads: the endpoint's route and each deployment's Service URL.

    No key is in it: the gateway reads the keys from the mounted Secret.
    """
    name = endpoint["name"]
    routes: dict[str, Any] = {}
    upstreams: dict[str, list[str]] = {}
    for document in deployments:
        settings = document.get("request_settings") or {}
        auto = scaling(document)
        routes[document["name"]] = {
            "name": document["name"],
            "max_concurrent_requests_per_instance": int(
                settings.get("max_concurrent_requests_per_instance", 10)
            ),
            # the gateway's in-flight limit allows for every pod the autoscaler may add
            "instance_count": auto.max_instances if auto else int(document.get("instance_count", 1)),
            "request_timeout_ms": int(settings.get("request_timeout_ms", 5000)),
        }
        upstreams[document["name"]] = [f"http://{object_name(name, document['name'])}:{IMAGE_PORT}"]
    return {
        "endpoint": {
            "name": name,
            "auth_mode": endpoint.get("auth_mode", "key"),
            "traffic": dict(endpoint.get("traffic") or {}),
            "mirror_traffic": dict(endpoint.get("mirror_traffic") or {}),
            "deployments": routes,
        },
        "upstreams": upstreams,
    }


def gateway_objects(
    endpoint: Mapping[str, Any], deployments: list[Mapping[str, Any]], options: ExportOptions
) -> list[dict[str, Any]]:
    """The endpoint's gateway: keys Secret, routes ConfigMap, Deployment, Service, PDB (key auth only)."""
    name = endpoint["name"]
    if endpoint.get("auth_mode", "key") != "key":
        raise ExportError(
            f"endpoint {name!r} uses auth_mode {endpoint.get('auth_mode')!r}; the gateway in a cluster "
            "checks keys only: export an endpoint with auth_mode key"
        )
    keys = endpoint.get("keys") or {}
    image = options.gateway_image
    if image is None:
        if not deployments:
            raise ExportError(
                f"endpoint {name!r} has no deployment whose image could run the gateway: "
                "give one with --gateway-image"
            )
        first = deployments[0]
        image = options.images.get(first["name"]) or default_image(
            name, first["name"], str(first.get("model", ""))
        )
    labels = _labels(name, "gateway")
    base = object_name(name)
    routes_map, keys_secret = object_name(name, "routes"), object_name(name, "keys")
    routes = json.dumps(gateway_routes(endpoint, deployments), indent=2, sort_keys=True)
    container = {
        "name": "gateway",
        "image": image,
        "command": [
            "flowport",
            "gateway",
            "--routes",
            f"{GATEWAY_ROUTES_DIR}/{GATEWAY_ROUTES_FILE}",
            "--keys",
            GATEWAY_KEYS_DIR,
            "--host",
            "0.0.0.0",
            "--port",
            str(IMAGE_PORT),
        ],
        "ports": [{"name": "http", "containerPort": IMAGE_PORT, "protocol": "TCP"}],
        "env": [{"name": "HOME", "value": WRITABLE_DIR}, {"name": "TMPDIR", "value": WRITABLE_DIR}],
        "resources": {part: dict(values) for part, values in GATEWAY_RESOURCES.items()},
        "livenessProbe": _http_probe(GATEWAY_HEALTH_PATH, {"initial_delay": 5, "failure_threshold": 3}, True),
        "readinessProbe": _http_probe(
            GATEWAY_HEALTH_PATH, {"initial_delay": 2, "period": 5, "failure_threshold": 3}, False
        ),
        "securityContext": _container_security(),
        "volumeMounts": [
            {"name": "tmp", "mountPath": WRITABLE_DIR},
            {"name": "routes", "mountPath": GATEWAY_ROUTES_DIR, "readOnly": True},
            {"name": "keys", "mountPath": GATEWAY_KEYS_DIR, "readOnly": True},
        ],
    }
    pod = {
        "automountServiceAccountToken": False,
        "securityContext": _pod_security(),
        "containers": [container],
        "volumes": [
            {"name": "tmp", "emptyDir": {}},
            {"name": "routes", "configMap": {"name": routes_map}},
            {"name": "keys", "secret": {"secretName": keys_secret, "defaultMode": 0o440}},
        ],
    }
    return [
        _secret(keys_secret, labels, {k: v for k, v in keys.items() if v}, options),
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": _metadata(routes_map, labels, options),
            "data": {GATEWAY_ROUTES_FILE: routes},
        },
        _workload(base, labels, pod, options.gateway_replicas, options),
        _service(base, labels, GATEWAY_SERVICE_PORT, options),
        _pdb(base, labels, options),
    ]


# -- the whole export -----------------------------------------------------------------------


def export_manifests(
    document: Mapping[str, Any], options: ExportOptions, deployment: str | None = None
) -> dict[str, list[dict[str, Any]]]:
    """File name -> its objects: ``<endpoint>.yaml`` (the gateway), ``<endpoint>-<deployment>.yaml``.

    ``document`` is what ``ControlPlane.export`` returns. With ``deployment`` only that
    deployment's file is made (the endpoint's gateway stays as it was exported).
    """
    if options.namespace is not None and not NAMESPACE.match(options.namespace):
        raise ExportError(
            f"--namespace {options.namespace!r} is not a Kubernetes namespace: lower-case letters, "
            "digits and '-', starting and ending with a letter or digit, at most 63 characters"
        )
    endpoint = document["endpoint"]
    name = endpoint["name"]
    deployments = sorted(document.get("deployments") or [], key=lambda d: d["name"])
    unknown = sorted(set(options.images) - {d["name"] for d in deployments})
    if unknown:
        raise ExportError(f"--image names deployments that are not exported: {', '.join(unknown)}")
    files: dict[str, list[dict[str, Any]]] = {}
    if deployment is None:
        files[f"{object_name(name)}.yaml"] = gateway_objects(endpoint, deployments, options)
    for item in deployments:
        if deployment is None or item["name"] == deployment:
            files[f"{object_name(name, item['name'])}.yaml"] = deployment_objects(name, item, options)
    _check_unique(files)
    return files


def _check_unique(files: Mapping[str, list[dict[str, Any]]]) -> None:
    seen: dict[tuple[str, str], str] = {}
    for file, objects in files.items():
        for obj in objects:
            key = (obj["kind"], obj["metadata"]["name"])
            if key in seen:
                raise ExportError(
                    f"{key[0]} {key[1]!r} would be written twice ({seen[key]} and {file}): deployment names "
                    "that differ only in case, or that end like another's object names, collide; rename one"
                )
            seen[key] = file


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the routes file in its ConfigMap) as readable ``|`` blocks."""


def _text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _text)


def render(objects: list[dict[str, Any]]) -> str:
    """Objects as one multi-document YAML text, as ``kubectl apply -f`` reads it."""
    return "---\n".join(
        yaml.dump(obj, Dumper=_Dumper, sort_keys=False, default_flow_style=False) for obj in objects
    )


def write_manifests(files: Mapping[str, list[dict[str, Any]]], directory: Path) -> list[Path]:
    """Write each file (0600 before anything is in it: they hold Secrets; never through a link)
    into ``directory`` (made 0700 if new); ExportError naming the path when that cannot be done."""
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        why = f"cannot make the folder {directory}: {exc.strerror}"
        raise ExportError(f"{why}; give another --output") from None
    written = []
    for name, objects in files.items():
        path = directory / name
        try:
            handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            with os.fdopen(handle, "w", encoding="utf-8") as out:
                os.fchmod(handle, 0o600)  # a file that was there keeps its mode until this
                out.write(render(objects))
        except OSError as exc:
            why = "it is a link (remove it)" if os.path.islink(path) else exc.strerror
            raise ExportError(f"cannot write {path}: {why}; give another --output") from None
        written.append(path)
    return written
