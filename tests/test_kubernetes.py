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

from flowport.build.image import (
    CONNECTIONS_ENV,
    CONNECTIONS_MOUNT,
    FLOW_ENV,
    IMAGE_COMMAND,
    IMAGE_PORT,
    IMAGE_USER,
    PORT_ENV,
    READY_PATH,
    SCORE_PATH,
)
from flowport.build.kubernetes import (
    DEFAULT_RESOURCES,
    KUBERNETES_VERSION,
    ExportError,
    ExportOptions,
    export_manifests,
)
from flowport.runtime.container import instance_config
from flowport.testing.threaded_server import ThreadedServer
from tests.conftest import free_port
from tests.endpoint_harness import FLOWS, Flowport
from tests.test_build import (
    BASE_IMAGE,
    GREET,
    GREETING,
    PODMAN,
    SECRET,
    build_image,
    container_environment,
    remove_container,
    running,
    wait_healthy,
)

CONNECTION_SECRET = "conn-secret-value-123"
TOKEN_VALUE = "token-secret-value-456"
SALT_VALUE = "salt-secret-value-789"

CONNECTED = {"path": str(FLOWS / "connected")}
"""A flow whose node names the connection ``shop_conn``: the export hands it over."""
BLUE = {
    "model": CONNECTED,
    "instance_count": 1,
    "environment_variables": {
        "COLOR": "blue",
        "API_TOKEN": TOKEN_VALUE,  # secret by its name
        "SALT": SALT_VALUE,  # secret because it is marked
        "UPSTREAM": "${{azureml://connections/shop_conn/credentials/key}}",  # a secret, by reference
        "WHERE": "${{azureml://connections/shop_conn/metadata/region}}",
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
        "cooldown_seconds": 120,
    },
    "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": 2, "memory": "2Gi"}},
}
GREEN = {"model": CONNECTED, "instance_count": 3, "environment_variables": {"COLOR": "green"}}


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
        "NetworkPolicy",
        "PodDisruptionBudget",
        "Secret",
        "Secret",
        "Service",
    ]
    assert sorted(kind for name, kind in kinds if name == "shop-green.yaml") == [
        "Deployment",
        "NetworkPolicy",
        "PodDisruptionBudget",
        "Secret",  # its connections; it has no secret variable
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
    # connection references are resolved as the local instances see them; a credential stays secret
    assert env["UPSTREAM"]["valueFrom"]["secretKeyRef"] == {"name": "shop-blue-env", "key": "UPSTREAM"}
    assert env["WHERE"]["value"] == "west"
    variables = by_kind(blue, "Secret", "shop-blue-env")["data"]
    assert base64.b64decode(variables["UPSTREAM"]).decode() == CONNECTION_SECRET
    connections = by_kind(blue, "Secret", "shop-blue-connections")
    assert list(connections["data"]) == ["shop_conn.yaml"]  # one <name>.yaml per connection
    handed = yaml.safe_load(base64.b64decode(connections["data"]["shop_conn.yaml"]))
    assert handed == {
        "name": "shop_conn",
        "type": "custom",
        "configs": {"region": "west"},
        "secrets": {"key": CONNECTION_SECRET},
    }
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
    assert CONNECTIONS_ENV not in env  # the Secret is mounted where the image looks by default
    assert container["command"] == list(IMAGE_COMMAND)  # the image's own entry
    assert container["ports"][0]["containerPort"] == IMAGE_PORT
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["connections"] == {"name": "connections", "mountPath": CONNECTIONS_MOUNT, "readOnly": True}
    hpa = by_kind(blue, "HorizontalPodAutoscaler")["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 6)
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "shop-blue"}
    assert hpa["metrics"][0]["resource"]["target"] == {"type": "Utilization", "averageUtilization": 55}
    assert hpa["behavior"] == {"scaleDown": {"stabilizationWindowSeconds": 120}}

    green = by_kind(load(exported / "shop-green.yaml"), "Deployment")
    assert green["spec"]["replicas"] == 3
    green_container = green["spec"]["template"]["spec"]["containers"][0]
    assert green_container["resources"] == DEFAULT_RESOURCES
    assert green_container["livenessProbe"]["initialDelaySeconds"] == 10  # Azure's defaults
    assert not [e for e in green_container["env"] if "valueFrom" in e]


def test_pods_run_locked_down_and_labels_tie_the_objects_together(exported: Path) -> None:
    for path in exported.iterdir():
        objects = load(path)
        deployment = by_kind(objects, "Deployment")
        pod = deployment["spec"]["template"]
        assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
        assert pod["spec"]["securityContext"]["runAsUser"] == IMAGE_USER
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
        if path.name != "shop.yaml":  # a deployment's pods: only the endpoint's gateway gets in
            policy = by_kind(objects, "NetworkPolicy")["spec"]
            assert policy["podSelector"]["matchLabels"] == selected
            [rule] = policy["ingress"]
            gateway_pods = by_kind(load(exported / "shop.yaml"), "Deployment")["spec"]["template"]
            assert (
                rule["from"][0]["podSelector"]["matchLabels"].items()
                <= gateway_pods["metadata"]["labels"].items()
            )
            assert rule["ports"] == [{"port": "http", "protocol": "TCP"}]
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
    assert services["shop-blue"]["spec"]["clusterIP"] == "None"  # its name resolves to the ready pods
    assert "clusterIP" not in services["shop"]["spec"]
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
    assert sorted(o["kind"] for o in objects) == [
        "Deployment",
        "NetworkPolicy",
        "PodDisruptionBudget",
        "Secret",
        "Service",
    ]
    for obj in objects:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        assert obj["metadata"]["namespace"] == "prod"
    image = by_kind(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == "registry.example/shop-green:7"

    refused = fp.cli("online-endpoint", "export", "-n", "shop", "--format", "helm", check=False)
    assert refused.returncode == 1
    assert refused.stderr.strip() == "error: --format 'helm' is not supported; use kubernetes"
    refused = fp.cli("deployment", "export", "-e", "shop", "-n", "red", "--format", "kubernetes", check=False)
    assert refused.returncode == 1
    assert "deployment 'red' does not exist on endpoint 'shop'" in refused.stderr
    refused = fp.cli(
        "endpoint", "export", "-n", "shop", "--format", "kubernetes", "--namespace", "Prod", check=False
    )
    assert refused.stderr.startswith("error: --namespace 'Prod' is not a Kubernetes namespace")
    # the export holds the keys: like get-credentials it needs the admin token
    assert fp.http.post(f"{fp.url}/api/v1/endpoints/shop/export").status_code == 401


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
    assert "cooldown_seconds must be a number of seconds from 0 to 3600, got 7200" in error(
        scale_settings={"type": "target_utilization", "cooldown_seconds": 7200}
    )
    token = {"endpoint": {**endpoint, "auth_mode": "aml_token"}, "deployments": [base]}
    with pytest.raises(ExportError, match="checks keys only"):
        export_manifests(token, ExportOptions())


# -- the exported pods as processes ----------------------------------------------------------


class Pod:
    """A Deployment's pod run as a local process, as a kubelet would set it up.

    Its volumes become folders under ``root`` (emptyDir empty, Secret and ConfigMap items as
    files), ``secretKeyRef`` variables are read from the exported Secrets, and every path under
    a mount point (in variables and arguments) is moved to that folder.
    """

    def __init__(self, objects: list[dict[str, Any]], root: Path) -> None:
        self.objects = objects
        self.spec = by_kind(objects, "Deployment")["spec"]["template"]["spec"]
        self.container = self.spec["containers"][0]
        self.mounts: dict[str, Path] = {}
        volumes = {v["name"]: v for v in self.spec["volumes"]}
        for mount in self.container["volumeMounts"]:
            folder = root / mount["name"]
            folder.mkdir(parents=True)
            volume = volumes[mount["name"]]
            items = {}
            if "secret" in volume:
                secret = by_kind(objects, "Secret", volume["secret"]["secretName"])
                items = {k: base64.b64decode(v) for k, v in secret["data"].items()}
            elif "configMap" in volume:
                items = {k: v.encode() for k, v in by_kind(objects, "ConfigMap")["data"].items()}
            for key, value in items.items():
                (folder / key).write_bytes(value)
            self.mounts[mount["mountPath"]] = folder

    def local(self, text: str) -> str:
        for path, folder in self.mounts.items():
            if text == path or text.startswith(path + "/"):
                return str(folder) + text[len(path) :]
        return text

    def environment(self) -> dict[str, str]:
        env = {"PATH": os.environ["PATH"]}
        for item in self.container["env"]:
            if "value" in item:
                env[item["name"]] = self.local(item["value"])
            else:
                ref = item["valueFrom"]["secretKeyRef"]
                secret = by_kind(self.objects, "Secret", ref["name"])
                env[item["name"]] = base64.b64decode(secret["data"][ref["key"]]).decode()
        return env

    def start(self, log: Path, args: list[str]) -> Process:
        """Run ``flowport ARGS --port P`` with the pod's environment on a free loopback port."""
        port = free_port()
        argv = [sys.executable, "-m", "flowport.cli.main", *args, "--port", str(port)]
        return Process(log, self.environment(), argv, port)

    def run_image(self, log: Path, flow: Path) -> Process:
        """The container's command (the image's entry) with this machine's Python, as the image
        would run it: its flow at ``flow``, the mounted connections and port moved here."""
        command = self.container["command"]
        assert command == list(IMAGE_COMMAND)
        port = free_port()
        env = {
            **self.environment(),
            FLOW_ENV: str(flow),  # the image's ENV
            CONNECTIONS_ENV: self.local(CONNECTIONS_MOUNT),
            PORT_ENV: str(port),
        }
        return Process(log, env, [sys.executable, *command[1:]], port)

    def probe(self, process: Process) -> None:
        """Until the readiness probe's path answers 200; then the liveness path must too."""
        process.wait(self.container["readinessProbe"]["httpGet"]["path"])
        assert httpx.get(process.url + self.container["livenessProbe"]["httpGet"]["path"]).status_code == 200


class Process:
    """A child process with exactly ``env`` serving on loopback ``port``, its output in a log file."""

    def __init__(self, log: Path, env: dict[str, str], argv: list[str], port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                argv,
                env=env,
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


def test_the_exported_pods_serve_the_endpoint_on_loopback(
    exported: Path, shop: tuple[Flowport, dict[str, str]], tmp_path: Path
) -> None:
    """Each exported pod as a process: instances with the manifests' command (the image's entry),
    variables, Secrets and probes, then ``flowport gateway`` with the exported
    command, ConfigMap and keys Secret: 401s, the 70/30 split, the pin header, a 429 passed
    through, and a rotated key taken without a restart."""
    _, keys = shop
    pods = {
        color: Pod(load(exported / f"shop-{color}.yaml"), tmp_path / color) for color in ("blue", "green")
    }
    instances = {
        color: pod.run_image(tmp_path / f"{color}.log", FLOWS / "connected") for color, pod in pods.items()
    }
    busy = ThreadedServer(busy_app).start()
    gateway = None
    try:
        for color, pod in pods.items():
            pod.probe(instances[color])
        gateway_pod = Pod(load(exported / "shop.yaml"), tmp_path / "gateway")
        # Cluster DNS resolves the Services' names; here each points at its local process.
        routes_file = Path(gateway_pod.local("/etc/flowport/gateway/routes.json"))
        routes = json.loads(routes_file.read_text())
        assert routes["upstreams"]["blue"] == ["http://shop-blue:8080"]
        routes["upstreams"] = {color: [process.url] for color, process in instances.items()}
        # a host name, as a Service's: the gateway resolves it to the addresses behind it
        routes["upstreams"]["green"] = [f"http://localhost:{instances['green'].port}"]
        routes["upstreams"]["busy"] = [busy.url]
        routes["endpoint"]["deployments"]["busy"] = {"name": "busy"}
        routes_file.write_text(json.dumps(routes))
        command = gateway_pod.container["command"]
        assert command[0] == "flowport" and command[-4:] == ["--host", "0.0.0.0", "--port", "8080"]
        args = [gateway_pod.local(arg) for arg in command[1:-4]] + ["--reload-seconds", "0.1"]
        gateway = gateway_pod.start(tmp_path / "gateway.log", args)
        gateway_pod.probe(gateway)
        score = f"{gateway.url}/endpoints/shop/score"

        def call(key: str | None, **headers: str) -> httpx.Response:
            auth = {"authorization": f"Bearer {key}"} if key else {}
            return httpx.post(score, json={"text": "hi"}, headers={**auth, **headers}, timeout=30)

        assert call(None).status_code == 401
        assert call("not-a-key").status_code == 401
        seen = {"blue": 0, "green": 0}
        with httpx.Client(timeout=30) as client:
            for _ in range(200):
                auth = {"authorization": f"Bearer {keys['primaryKey']}"}
                answer = client.post(score, json={"text": "hi"}, headers=auth)
                assert answer.status_code == 200, answer.text
                deployment = answer.headers["azureml-model-deployment"]
                # the instance behind it got its deployment's variables, secret ones and connection
                assert answer.json() == {
                    "echoed": "hi",
                    "color": deployment,
                    "region": "west",
                    "connection_key": CONNECTION_SECRET,
                    "token": TOKEN_VALUE if deployment == "blue" else "",
                }
                seen[deployment] += 1
        assert 100 < seen["blue"] < 180  # 70% of 200, far from both ends
        assert seen["green"] == 200 - seen["blue"]

        pinned = call(keys["secondaryKey"], **{"azureml-model-deployment": "green"})
        assert (pinned.status_code, pinned.json()["color"]) == (200, "green")
        full = call(keys["primaryKey"], **{"azureml-model-deployment": "busy"})
        assert (full.status_code, full.headers["retry-after"]) == (429, "1")

        # a rotated key (the Secret edited, the kubelet updating the file) without a restart
        Path(gateway_pod.local("/etc/flowport/keys/primary")).write_text("a-brand-new-primary-key-000")
        deadline = time.monotonic() + 30
        while call("a-brand-new-primary-key-000").status_code != 200:
            assert time.monotonic() < deadline, gateway.log.read_text()[-2000:]
            time.sleep(0.1)
        assert call(keys["primaryKey"]).status_code == 401
    finally:
        if gateway is not None:
            gateway.stop()
        for process in instances.values():
            process.stop()
        busy.stop()


def test_the_request_settings_reach_the_image_entry(exported: Path, tmp_path: Path) -> None:
    """The image's entry, given the exported pod's variables and mounted Secret, serves with the
    deployment's request settings and its connection (the settings are not baked into the image)."""
    pod = Pod(load(exported / "shop-blue.yaml"), tmp_path / "blue")
    env = {**pod.environment(), CONNECTIONS_ENV: pod.local(CONNECTIONS_MOUNT)}
    config = instance_config(env)
    assert (config.max_concurrent_requests, config.request_timeout_ms) == (4, 7000)
    assert config.connections["shop_conn"]["secrets"] == {"key": CONNECTION_SECRET}
    assert pod.container["readinessProbe"]["httpGet"]["path"] == READY_PATH


def test_the_gateway_refuses_bad_files_with_one_line(tmp_path: Path) -> None:
    routes = tmp_path / "routes.json"
    routes.write_text('{"endpoint": {"name": "shop", "traffic": {"blue": 100}}}')

    def gateway(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "flowport.cli.main", "gateway", "--routes", str(routes), *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=60)

    done = gateway()
    assert done.returncode == 1
    assert done.stderr.strip() == "error: no key for endpoint 'shop': give the folder of its keys with --keys"
    done = gateway("--keys", str(tmp_path / "missing"))
    assert (
        done.stderr.strip()
        == f"error: cannot read the keys folder {tmp_path / 'missing'}: No such file or directory"
    )
    routes.write_text("{not json")
    done = gateway()
    assert done.returncode == 1
    assert done.stderr.startswith(f"error: {routes} is not valid JSON")
    assert "Traceback" not in done.stderr


def test_long_names_stay_valid_and_distinct() -> None:
    endpoint = "e" * 32
    documents = [{"name": "d" * 31 + suffix, "model": "azureml:m:1"} for suffix in ("a", "b")]
    keys = {"primary": "p" * 20, "secondary": "s" * 20}
    document = {"endpoint": {"name": endpoint, "auth_mode": "key", "keys": keys}, "deployments": documents}
    files = export_manifests(document, ExportOptions())
    names = {obj["metadata"]["name"] for objects in files.values() for obj in objects}
    assert all(len(name) <= 63 for name in names)
    for objects in files.values():
        for obj in objects:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    services = [o for objects in files.values() for o in objects if o["kind"] == "Service"]
    assert len({s["metadata"]["name"] for s in services}) == 3


def test_a_routes_file_that_breaks_keeps_the_last_good_table(tmp_path: Path) -> None:
    from flowport.dataplane.standalone import RoutesError, StandaloneGateway

    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / "primary").write_text("primary-key-0123456789\n")
    (keys / "..data").mkdir()  # what the kubelet adds next to a Secret's files
    routes = tmp_path / "routes.json"
    table = {"endpoint": {"name": "shop", "traffic": {"blue": 100}}, "upstreams": {"blue": ["http://b:8080"]}}
    routes.write_text(json.dumps(table))
    app = StandaloneGateway(routes, keys)
    assert app.routing.route.traffic == {"blue": 100}
    assert len(app.routing.route.key_digests) == 1
    routes.write_text(json.dumps({**table, "upstreams": {"blue": ["b:8080"]}}))
    with pytest.raises(RoutesError, match="'b:8080' is not an http://host:port address"):
        app.reload()
    assert app.routing.upstreams == {"blue": ["http://b:8080"]}


def test_a_key_file_that_cannot_be_read_is_one_line_and_keeps_the_last_good_keys(tmp_path: Path) -> None:
    from flowport.dataplane.standalone import RoutesError, StandaloneGateway

    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / "primary").write_bytes(b"\xff\xfe not text")
    routes = tmp_path / "routes.json"
    table = {"endpoint": {"name": "shop", "traffic": {"blue": 100}}, "upstreams": {"blue": ["http://b:8080"]}}
    routes.write_text(json.dumps(table))
    with pytest.raises(RoutesError, match="primary"):
        StandaloneGateway(routes, keys)
    (keys / "primary").write_text("primary-key-0123456789\n")
    app = StandaloneGateway(routes, keys)
    (keys / "secondary").write_bytes(b"\xff")
    app._tick()  # the watcher's check: logs and keeps the table (it must not raise: the watcher would die)
    assert len(app.routing.route.key_digests) == 1


def test_upstream_names_resolve_to_every_address() -> None:
    """A headless Service's name gives its ready pods; here ``localhost`` gives the loopback address."""
    from flowport.dataplane.standalone import resolve

    assert "http://127.0.0.1:8080" in resolve("http://localhost:8080")
    assert resolve("http://10.1.2.3:8080") == ["http://10.1.2.3:8080"]
    assert resolve("https://shop-blue:8443") == ["https://shop-blue:8443"]  # TLS names the host
    assert resolve("unix:/run/instance.sock") == ["unix:/run/instance.sock"]


# -- the exported deployment under podman, with the image build-image makes -------------------


@pytest.fixture(scope="module")
def containers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return container_environment(tmp_path_factory)


def podman_run_arguments(objects: list[dict[str, Any]], folder: Path) -> list[str]:
    """``podman run`` options for the exported Deployment's container, as a kubelet sets it up.

    Variables from ``env`` (``secretKeyRef`` read from the exported Secrets), each Secret volume's
    items written as files under ``folder`` (mode and group as ``defaultMode`` and ``fsGroup``
    give them) and mounted read-only, an emptyDir as a tmpfs when the root filesystem is
    read-only, the user, dropped capabilities and the command from the security contexts.
    """
    spec = by_kind(objects, "Deployment")["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    security = {**spec["securityContext"], **container["securityContext"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    args = ["--user", f"{security['runAsUser']}:{security['runAsGroup']}"]
    if security.get("readOnlyRootFilesystem"):
        args.append("--read-only")
    args += [f"--cap-drop={cap}" for cap in security.get("capabilities", {}).get("drop", [])]
    if security.get("allowPrivilegeEscalation") is False:
        args += ["--security-opt", "no-new-privileges"]
    for item in container["env"]:
        if "value" in item:
            value = item["value"]
        else:
            ref = item["valueFrom"]["secretKeyRef"]
            value = base64.b64decode(by_kind(objects, "Secret", ref["name"])["data"][ref["key"]]).decode()
        args += ["-e", f"{item['name']}={value}"]
    for mount in container["volumeMounts"]:
        volume = volumes[mount["name"]]
        if "emptyDir" in volume:
            args += ["--tmpfs", f"{mount['mountPath']}:rw,mode=1777"]
            continue
        source = folder / mount["name"]
        source.mkdir(parents=True)
        source.chmod(0o755)
        secret = by_kind(objects, "Secret", volume["secret"]["secretName"])
        for key, value in secret["data"].items():
            (source / key).write_bytes(base64.b64decode(value))
            os.chown(source / key, 0, security["fsGroup"])
            (source / key).chmod(volume["secret"]["defaultMode"])
        assert mount["readOnly"] is True
        args += ["-v", f"{source}:{mount['mountPath']}:ro"]
    args += ["--entrypoint", json.dumps(container["command"])]  # Kubernetes' command: the entrypoint
    return args


def test_the_exported_deployment_runs_the_built_image_under_podman(
    containers: dict[str, str], tmp_path: Path
) -> None:
    """The image ``build-image`` makes for a deployment, run as its exported Deployment says:
    the manifest's command, variables and Secrets, connection folder, user and read-only root;
    both probe paths answer on the manifest's port, and ``/score`` uses the mounted connection
    (no variable for its secret is set: the baked template is replaced by the Secret's file)."""
    name = f"flowport-test-k8s-{os.getpid()}"
    with Flowport(tmp_path / "home") as server:
        server.ok("PUT", "/connections/greeting", json=GREETING)
        server.endpoint("kube")
        server.deploy(
            "kube",
            "blue",
            model={"path": str(GREET)},
            environment_variables={"API_TOKEN": TOKEN_VALUE},
            request_settings={"max_concurrent_requests_per_instance": 3, "request_timeout_ms": 9000},
        )
        exported = server.cli(
            "online-deployment", "export", "-e", "kube", "-n", "blue", "--format", "kubernetes"
        )
        objects = [obj for obj in yaml.safe_load_all(exported.stdout) if obj]
        container = by_kind(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]
        tag = container["image"]
        assert tag == "flowport-kube-blue:1"  # the image build-image is told to make, by default name
        done = build_image(
            server, containers, "kube", "blue", tag, tmp_path / "ctx", "--base-image", BASE_IMAGE
        )
    assert done.returncode == 0, done.stderr[-4000:]
    for obj in objects:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    env = {item["name"]: item for item in container["env"]}
    assert env["API_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "kube-blue-env"
    assert env["FLOWPORT_MAX_CONCURRENT_REQUESTS"]["value"] == "3"
    assert "GREETING_API_KEY" not in env

    # The host's network (podman's bridge does not run here): the manifest's port, moved to a
    # free one with the image's FLOWPORT_PORT, as ``-p FREE:8080`` would.
    (port_spec,) = container["ports"]
    assert port_spec["containerPort"] == IMAGE_PORT
    port = free_port()
    run = [*PODMAN, "run", "--detach", "--rm", "--name", name, "--network=host", "--no-healthcheck",
           *podman_run_arguments(objects, tmp_path / "volumes"), "-e", f"{PORT_ENV}={port}", tag]  # fmt: skip
    started = subprocess.run(run, env=containers, capture_output=True, text=True, check=False)
    assert started.returncode == 0, started.stderr
    log = tmp_path / "container.log"
    try:
        url = f"http://127.0.0.1:{port}"
        alive = lambda: running(name, containers, log)  # noqa: E731
        for probe in ("livenessProbe", "readinessProbe"):
            wait_healthy(url, alive, log, path=container[probe]["httpGet"]["path"])
        answer = httpx.post(f"{url}{SCORE_PATH}", json={"name": "Ada"}, timeout=30)
        assert answer.status_code == 200, answer.text
        assert answer.json() == {
            "greeting": "Hello, Ada!",  # the connection's config
            "key_seen": SECRET,  # its secret, from the mounted Secret's file
            "uid": IMAGE_USER,  # the security context's user
        }
        # the root filesystem is read-only; /tmp (the emptyDir) is the writable place
        probe = subprocess.run(
            [*PODMAN, "exec", name, "sh", "-c", "touch /app/x 2>/dev/null && echo rw || echo ro; "
             "touch /tmp/x && echo tmp-rw"],
            env=containers, capture_output=True, text=True,
        )  # fmt: skip
        assert probe.stdout.split() == ["ro", "tmp-rw"], probe.stderr
    finally:
        stopped = remove_container(name, containers)
    assert stopped.returncode == 0, stopped.stderr
    assert subprocess.run([*PODMAN, "container", "exists", name], env=containers).returncode == 1


def test_manifests_are_never_written_through_a_link_or_into_a_file(tmp_path: Path) -> None:
    """They hold Secrets: a link planted where a manifest goes is refused, not followed, and a
    folder that cannot be written is one line, never a traceback."""
    from flowport.build.kubernetes import ExportError, write_manifests

    objects = {"shop.yaml": [{"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "k"}}]}
    out = tmp_path / "out"
    out.mkdir()
    elsewhere = tmp_path / "elsewhere.yaml"
    elsewhere.write_text("")
    elsewhere.chmod(0o644)
    (out / "shop.yaml").symlink_to(elsewhere)
    with pytest.raises(ExportError, match=r"shop\.yaml: it is a link"):
        write_manifests(objects, out)
    assert elsewhere.read_text() == "" and stat.S_IMODE(elsewhere.stat().st_mode) == 0o644
    taken = tmp_path / "a-file"
    taken.write_text("x")
    with pytest.raises(ExportError, match="a-file"):
        write_manifests(objects, taken)
