"""Kubernetes manifests from a real endpoint, and the gateway they run, on loopback.

The manifests are exported by the CLI from a running ``flowport server`` with two deployments
and validated against the Kubernetes 1.30 OpenAPI schemas (``kubernetes-validate``, which ships
them: no network). The gateway's routes and keys are taken from the exported ConfigMap and
Secret and served by ``flowport gateway`` as a process in front of real instance processes.
"""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import kubernetes_validate
import pytest
import yaml

from flowport.build.kubernetes import (
    DEFAULT_RESOURCES,
    IMAGE_UID,
    KUBERNETES_VERSION,
    ExportError,
    ExportOptions,
    export_manifests,
)
from flowport.testing.threaded_server import ThreadedServer
from tests.conftest import free_port
from tests.endpoint_harness import FLOWS, Flowport

CONNECTION_SECRET = "conn-secret-value-123"
TOKEN_VALUE = "token-secret-value-456"
SALT_VALUE = "salt-secret-value-789"

BLUE = {
    "instance_count": 1,
    "environment_variables": {
        "COLOR": "blue",
        "API_TOKEN": TOKEN_VALUE,  # secret by its name
        "SALT": SALT_VALUE,  # secret because it is marked
        "SHOP_CONNECTION": "shop_conn",  # names a connection: it is handed over
    },
    "secret_environment_variables": ["SALT"],
    "request_settings": {"request_timeout_ms": 7000, "max_concurrent_requests_per_instance": 4},
    "liveness_probe": {"initial_delay": 3, "period": 7, "timeout": 4, "failure_threshold": 5},
    "readiness_probe": {
        "initial_delay": 1,
        "period": 3,
        "timeout": 2,
        "success_threshold": 2,
        "failure_threshold": 6,
    },
    "scale_settings": {
        "type": "target_utilization",
        "min_instances": 2,
        "max_instances": 6,
        "target_utilization_percentage": 55,
        "polling_interval": 10,
    },
    "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": 2, "memory": "2Gi"}},
}
GREEN = {"instance_count": 3, "environment_variables": {"COLOR": "green"}}


def load(path: Path) -> list[dict[str, Any]]:
    return [obj for obj in yaml.safe_load_all(path.read_text()) if obj]


def by_kind(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, f"{kind} {name}: {[o['metadata']['name'] for o in found]}"
    return found[0]


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Flowport, dict[str, str]]]:
    """A server with endpoint ``shop``: blue (autoscaled, secrets, a connection) 70%, green 30%."""
    home = tmp_path_factory.mktemp("k8s") / "home"
    with Flowport(home) as fp:
        connection = {"type": "custom", "configs": {"region": "west"}, "secrets": {"key": CONNECTION_SECRET}}
        fp.ok("PUT", "/connections/shop_conn", json=connection)
        fp.endpoint("shop")
        fp.deploy("shop", "blue", **BLUE)
        fp.deploy("shop", "green", **GREEN)
        assert fp.traffic("shop", blue=70, green=30).status_code == 200
        yield fp, fp.ok("POST", "/endpoints/shop/credentials")


@pytest.fixture(scope="module")
def exported(shop: tuple[Flowport, dict[str, str]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    fp, _ = shop
    folder = tmp_path_factory.mktemp("manifests") / "out"
    done = fp.cli(
        "online-endpoint", "export", "-n", "shop", "--format", "kubernetes", "--output", str(folder)
    )
    assert "kubectl apply -f" in done.stderr
    return folder


def test_every_exported_object_is_valid_for_kubernetes(exported: Path) -> None:
    files = sorted(p.name for p in exported.iterdir())
    assert files == ["shop-blue.yaml", "shop-green.yaml", "shop.yaml"]
    kinds = []
    for path in exported.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600  # they hold Secrets
        for obj in load(path):
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
            kinds.append((path.name, obj["kind"]))
    assert stat.S_IMODE(exported.stat().st_mode) == 0o700
    assert sorted(kind for name, kind in kinds if name == "shop-blue.yaml") == [
        "Deployment",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "Secret",
        "Secret",
        "Service",
    ]
    assert sorted(kind for name, kind in kinds if name == "shop-green.yaml") == [
        "Deployment",
        "PodDisruptionBudget",
        "Service",
    ]
    assert sorted(kind for name, kind in kinds if name == "shop.yaml") == [
        "ConfigMap",
        "Deployment",
        "PodDisruptionBudget",
        "Secret",
        "Service",
    ]


def test_a_broken_object_fails_the_schema_check(exported: Path) -> None:
    """The validation is a real check: the same Deployment with a wrong field type is refused."""
    deployment = by_kind(load(exported / "shop-green.yaml"), "Deployment")
    deployment["spec"]["replicas"] = "three"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def test_secrets_appear_only_in_secret_objects(exported: Path, shop: tuple[Flowport, dict[str, str]]) -> None:
    _, keys = shop
    secrets = [keys["primaryKey"], keys["secondaryKey"], CONNECTION_SECRET, TOKEN_VALUE, SALT_VALUE]
    forms = secrets + [base64.b64encode(s.encode()).decode() for s in secrets]
    in_secrets = ""
    for path in exported.iterdir():
        for obj in load(path):
            text = yaml.safe_dump(obj)
            if obj["kind"] == "Secret":
                in_secrets += "".join(base64.b64decode(v).decode() for v in obj["data"].values())
                continue
            leaked = [s for s in forms if s in text]
            assert not leaked, f"{obj['kind']} {obj['metadata']['name']} holds a secret"
    assert all(s in in_secrets for s in secrets)

    blue = load(exported / "shop-blue.yaml")
    env = {
        e["name"]: e for e in by_kind(blue, "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["COLOR"]["value"] == "blue"
    assert env["API_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "shop-blue-env", "key": "API_TOKEN"}
    assert env["SALT"]["valueFrom"]["secretKeyRef"] == {"name": "shop-blue-env", "key": "SALT"}
    connections = by_kind(blue, "Secret", "shop-blue-connections")
    handed = json.loads(base64.b64decode(connections["data"]["connections.json"]))
    assert handed["shop_conn"]["secrets"] == {"key": CONNECTION_SECRET}
    assert handed["shop_conn"]["configs"] == {"region": "west"}
    gateway_keys = by_kind(load(exported / "shop.yaml"), "Secret", "shop-keys")["data"]
    assert base64.b64decode(gateway_keys["primary"]).decode() == keys["primaryKey"]


def test_probes_resources_and_scaling_follow_the_yaml(exported: Path) -> None:
    blue = load(exported / "shop-blue.yaml")
    deployment = by_kind(blue, "Deployment")
    assert "replicas" not in deployment["spec"]  # the autoscaler owns the count
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "flowport-shop-blue:1"
    live, ready = container["livenessProbe"], container["readinessProbe"]
    assert live["httpGet"] == {"path": "/health", "port": "http"}
    assert (live["initialDelaySeconds"], live["periodSeconds"], live["timeoutSeconds"]) == (3, 7, 4)
    assert (live["successThreshold"], live["failureThreshold"]) == (1, 5)
    assert ready["httpGet"] == {"path": "/ready", "port": "http"}
    assert (ready["initialDelaySeconds"], ready["periodSeconds"], ready["timeoutSeconds"]) == (1, 3, 2)
    assert (ready["successThreshold"], ready["failureThreshold"]) == (2, 6)
    assert container["resources"] == {
        "requests": {"cpu": "500m", "memory": "1Gi"},
        "limits": {"cpu": "2", "memory": "2Gi"},
    }
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["FLOWPORT_MAX_CONCURRENT_REQUESTS"] == "4"
    assert env["FLOWPORT_REQUEST_TIMEOUT_MS"] == "7000"
    assert env["FLOWPORT_CONNECTIONS_FILE"] == "/etc/flowport/connections/connections.json"
    hpa = by_kind(blue, "HorizontalPodAutoscaler")["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 6)
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "shop-blue"}
    assert hpa["metrics"][0]["resource"]["target"] == {"type": "Utilization", "averageUtilization": 55}

    green = by_kind(load(exported / "shop-green.yaml"), "Deployment")
    assert green["spec"]["replicas"] == 3
    green_container = green["spec"]["template"]["spec"]["containers"][0]
    assert green_container["resources"] == DEFAULT_RESOURCES
    assert green_container["livenessProbe"]["initialDelaySeconds"] == 10  # Azure's defaults
    assert "volumeMounts" in green_container
    assert all(v["name"] != "connections" for v in green["spec"]["template"]["spec"]["volumes"])


def test_pods_run_locked_down_and_labels_tie_the_objects_together(exported: Path) -> None:
    for path in exported.iterdir():
        objects = load(path)
        deployment = by_kind(objects, "Deployment")
        pod = deployment["spec"]["template"]
        assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
        assert pod["spec"]["securityContext"]["runAsUser"] == IMAGE_UID
        assert pod["spec"]["automountServiceAccountToken"] is False
        for container in pod["spec"]["containers"]:
            assert container["securityContext"] == {
                "runAsNonRoot": True,
                "allowPrivilegeEscalation": False,
                "readOnlyRootFilesystem": True,
                "capabilities": {"drop": ["ALL"]},
            }
        labels = pod["metadata"]["labels"]
        assert labels["flowport.dev/endpoint"] == "shop"
        selected = deployment["spec"]["selector"]["matchLabels"]
        for kind in ("Service", "PodDisruptionBudget"):
            obj = by_kind(objects, kind)
            selector = (
                obj["spec"]["selector"] if kind == "Service" else obj["spec"]["selector"]["matchLabels"]
            )
            assert selector == selected
            assert selector.items() <= labels.items()
        assert by_kind(objects, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1
        for obj in objects:
            assert obj["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "flowport"


def test_the_gateway_routes_name_the_deployment_services(exported: Path) -> None:
    gateway = load(exported / "shop.yaml")
    routes = json.loads(by_kind(gateway, "ConfigMap")["data"]["routes.json"])
    assert routes["endpoint"]["traffic"] == {"blue": 70, "green": 30}
    assert routes["upstreams"] == {"blue": ["http://shop-blue:8080"], "green": ["http://shop-green:8080"]}
    # the in-flight limit allows for the autoscaler's largest count
    assert routes["endpoint"]["deployments"]["blue"]["instance_count"] == 6
    assert routes["endpoint"]["deployments"]["blue"]["max_concurrent_requests_per_instance"] == 4
    services = {
        o["metadata"]["name"]: o for p in exported.iterdir() for o in load(p) if o["kind"] == "Service"
    }
    assert services["shop-blue"]["spec"]["ports"][0]["port"] == 8080
    assert services["shop"]["spec"]["ports"][0] == {
        "name": "http",
        "port": 80,
        "targetPort": "http",
        "protocol": "TCP",
    }
    container = by_kind(gateway, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert container["command"][:2] == ["flowport", "gateway"]
    assert container["image"] == "flowport-shop-blue:1"


def test_one_deployment_alone_and_to_stdout(shop: tuple[Flowport, dict[str, str]]) -> None:
    fp, _ = shop
    printed = fp.cli(
        "online-deployment",
        "export",
        "-e",
        "shop",
        "-n",
        "green",
        "--format",
        "kubernetes",
        "--namespace",
        "prod",
        "--image",
        "registry.example/shop-green:7",
    ).stdout
    objects = [o for o in yaml.safe_load_all(printed) if o]
    assert sorted(o["kind"] for o in objects) == ["Deployment", "PodDisruptionBudget", "Service"]
    for obj in objects:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        assert obj["metadata"]["namespace"] == "prod"
    image = by_kind(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == "registry.example/shop-green:7"

    refused = fp.cli("online-endpoint", "export", "-n", "shop", "--format", "helm", check=False)
    assert refused.returncode == 1
    assert refused.stderr.strip() == "error: --format 'helm' is not supported; use kubernetes"


def test_bad_settings_are_one_clear_error() -> None:
    endpoint = {"name": "ep", "auth_mode": "key", "keys": {"primary": "k" * 20}}
    base = {"name": "blue", "model": "azureml:m:1"}

    def error(**fields: Any) -> str:
        document = {"endpoint": endpoint, "deployments": [{**base, **fields}]}
        with pytest.raises(ExportError) as caught:
            export_manifests(document, ExportOptions())
        return str(caught.value)

    assert error(resources={"requests": {"cpu": "lots"}}) == (
        "deployment 'blue': resources.requests.cpu: 'lots' is not a Kubernetes quantity "
        "(e.g. 500m or 0.5 for CPU, 512Mi or 2Gi for memory)"
    )
    assert "max_instances (2) is below min_instances (3)" in error(
        scale_settings={"type": "target_utilization", "min_instances": 3, "max_instances": 2}
    )
    assert "must be default or target_utilization" in error(scale_settings={"type": "bursty"})
    token = {"endpoint": {**endpoint, "auth_mode": "aml_token"}, "deployments": [base]}
    with pytest.raises(ExportError, match="checks keys only"):
        export_manifests(token, ExportOptions())


# -- the gateway as a process --------------------------------------------------------------


class Process:
    """A flowport command as a child process on a loopback port, its output in a log file."""

    def __init__(self, log: Path, *args: str, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "flowport.cli.main", *args, "--port", str(self.port)],
                env={**os.environ, **env},
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    def wait(self, path: str, timeout: float = 60) -> Process:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()[-3000:]
            try:
                if httpx.get(self.url + path, timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"{self.url}{path} never answered: {self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


async def busy_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """An instance that is always full: 429 with Retry-After, as a flowport instance answers."""
    if scope["type"] != "http":
        return
    body = b'{"error": {"code": "TooManyRequests", "message": "full"}}'
    headers = [(b"content-type", b"application/json"), (b"retry-after", b"1")]
    await send({"type": "http.response.start", "status": 429, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def test_the_exported_gateway_serves_the_endpoint_in_front_of_real_instances(
    exported: Path, shop: tuple[Flowport, dict[str, str]], tmp_path: Path
) -> None:
    """``flowport gateway`` with the exported ConfigMap and Secret: keys, split, pin, 429, reload."""
    _, keys = shop
    gateway_objects = load(exported / "shop.yaml")
    routes = json.loads(by_kind(gateway_objects, "ConfigMap")["data"]["routes.json"])
    keys_dir = tmp_path / "keys"  # the Secret as the kubelet mounts it: a file per key
    keys_dir.mkdir()
    for name, value in by_kind(gateway_objects, "Secret")["data"].items():
        (keys_dir / name).write_bytes(base64.b64decode(value))

    instances = {
        color: Process(
            tmp_path / f"{color}.log", "flow", "serve", "--source", str(FLOWS / "probe"), COLOR=color
        )
        for color in ("blue", "green")
    }
    busy = ThreadedServer(busy_app).start()
    gateway = None
    try:
        # the Services' names resolve in a cluster; here each points at its local instance
        routes["upstreams"] = {color: [instance.url] for color, instance in instances.items()}
        routes["upstreams"]["busy"] = [busy.url]
        routes["endpoint"]["deployments"]["busy"] = {"name": "busy"}
        routes_file = tmp_path / "routes.json"
        routes_file.write_text(json.dumps(routes))
        for instance in instances.values():
            instance.wait("/ready")
        args = ("gateway", "--routes", str(routes_file), "--keys", str(keys_dir), "--reload-seconds", "0.1")
        gateway = Process(tmp_path / "gateway.log", *args).wait("/health")
        score = f"{gateway.url}/endpoints/shop/score"

        def call(key: str | None, **headers: str) -> httpx.Response:
            auth = {"authorization": f"Bearer {key}"} if key else {}
            return httpx.post(score, json={"text": "hi"}, headers={**auth, **headers}, timeout=30)

        assert call(None).status_code == 401
        assert call("not-a-key").status_code == 401
        seen = {"blue": 0, "green": 0}
        with httpx.Client(timeout=30) as client:
            for _ in range(200):
                answer = client.post(
                    score, json={"text": "hi"}, headers={"authorization": f"Bearer {keys['primaryKey']}"}
                )
                assert answer.status_code == 200, answer.text
                deployment = answer.headers["azureml-model-deployment"]
                assert answer.json() == {"echoed": "hi", "color": deployment}  # the instance behind it
                seen[deployment] += 1
        assert 100 < seen["blue"] < 180  # 70% of 200, far from both ends
        assert seen["green"] == 200 - seen["blue"]

        pinned = call(keys["secondaryKey"], **{"azureml-model-deployment": "green"})
        assert (pinned.status_code, pinned.json()["color"]) == (200, "green")
        full = call(keys["primaryKey"], **{"azureml-model-deployment": "busy"})
        assert (full.status_code, full.headers["retry-after"]) == (429, "1")

        # a rotated key (the Secret edited) is picked up without a restart
        (keys_dir / "primary").write_text("a-brand-new-primary-key-000")
        deadline = time.monotonic() + 30
        while call("a-brand-new-primary-key-000").status_code != 200:
            assert time.monotonic() < deadline, gateway.log.read_text()[-2000:]
            time.sleep(0.1)
        assert call(keys["primaryKey"]).status_code == 401
    finally:
        if gateway is not None:
            gateway.stop()
        for instance in instances.values():
            instance.stop()
        busy.stop()


def test_the_gateway_refuses_bad_files_with_one_line(tmp_path: Path) -> None:
    routes = tmp_path / "routes.json"
    routes.write_text('{"endpoint": {"name": "shop", "traffic": {"blue": 100}}}')
    done = subprocess.run(
        [sys.executable, "-m", "flowport.cli.main", "gateway", "--routes", str(routes), "--port", "1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert done.stderr.strip() == "error: no key for endpoint 'shop': give the folder of its keys with --keys"
    routes.write_text("{not json")
    done = subprocess.run(
        [sys.executable, "-m", "flowport.cli.main", "gateway", "--routes", str(routes)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert done.stderr.startswith(f"error: {routes} is not valid JSON")
    assert "Traceback" not in done.stderr
