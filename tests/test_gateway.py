"""The gateway over real HTTP: uvicorn in front of real ``flowport flow serve`` instance processes."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import orjson
import pytest

from flowport.gateway import (
    DataCollection,
    DeploymentRoute,
    EndpointRoute,
    Gateway,
    TokenSigner,
    key_digest,
)
from flowport.gateway.collector import DataCollector, Record, partition
from flowport.gateway.stats import MINUTES
from flowport.instance_keys import HEADER, derive
from flowport.testing.threaded_server import ThreadedServer
from tests.conftest import free_port

HERE = Path(__file__).parent

ECHO = HERE / "serving_flows" / "echo_one"
SLOW = HERE / "serving_flows" / "slow"
DRIP = HERE / "gateway_flows" / "drip"

KEY, SECOND_KEY = "primary-key-0123456789", "secondary-key-9876543210"
AUTH = {"authorization": f"Bearer {KEY}"}
SIGNER = TokenSigner(b"gateway-test-secret-0123456789ab", ttl_seconds=3600)
INSTANCE_SECRET = b"instance-test-secret-0123456789a"
GRACE = 1.0
"""The gateway's allowance over request_timeout_ms in these tests (5 s in production)."""


# -- instance processes ------------------------------------------------------------


class Instance:
    """``flowport flow serve --uds`` as a child process, its output in a log file."""

    def __init__(self, flow: Path, folder: Path, name: str, **env: str) -> None:
        self.socket = str(folder / f"{name}.sock")
        self.address = f"unix:{self.socket}"
        self.log = folder / f"{name}.log"
        command = [sys.executable, "-m", "flowport.cli.main", "flow", "serve", "--source", str(flow)]
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [*command, "--uds", self.socket],
                env={**os.environ, "FLOWPORT_HOME": str(folder / "home"), **env},
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def client(self) -> httpx.Client:
        return httpx.Client(transport=httpx.HTTPTransport(uds=self.socket), base_url="http://instance")

    def wait_ready(self, timeout: float = 30) -> Instance:
        deadline = time.monotonic() + timeout
        with self.client() as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    break
                try:
                    if client.get("/ready", timeout=1).status_code == 200:
                        return self
                except httpx.TransportError:
                    time.sleep(0.05)
        self.stop()
        raise AssertionError(f"instance did not start: {self.log.read_text()[-2000:]}")

    def scored(self) -> int:
        """How many /score requests this instance answered, from its own /metrics."""
        with self.client() as client:
            text = client.get("/metrics").text
        return sum(
            int(float(n)) for n in re.findall(r'flowport_requests_total\{route="score"[^}]*\} (\S+)', text)
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


@pytest.fixture(scope="module")
def sockets() -> Iterator[Path]:
    """A short folder for Unix sockets (their paths must stay under ~100 characters)."""
    folder = Path(tempfile.mkdtemp(prefix="fpgw", dir="/tmp"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def instances(sockets: Path) -> Iterator[dict[str, Instance]]:
    """All shared instances, started together."""
    specs = {
        "blue": (ECHO, {}),
        "green": (ECHO, {}),
        "mirror": (ECHO, {}),
        "slow": (SLOW, {"FLOWPORT_REQUEST_TIMEOUT_MS": "60000", "FLOWPORT_MAX_CONCURRENT_REQUESTS": "100"}),
        "impatient": (SLOW, {"FLOWPORT_REQUEST_TIMEOUT_MS": "300"}),
        "drip": (DRIP, {}),
    }
    started = {name: Instance(flow, sockets, name, **env) for name, (flow, env) in specs.items()}
    try:
        for instance in started.values():
            instance.wait_ready()
        yield started
    finally:
        for instance in started.values():
            instance.stop()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    yield Gateway(
        SIGNER,
        data_dir=tmp_path_factory.mktemp("collected"),
        timeout_grace_seconds=GRACE,
        instance_secret=INSTANCE_SECRET,
    )


@pytest.fixture(scope="module")
def url(gateway: Gateway) -> Iterator[str]:
    with ThreadedServer(gateway, lifespan="on") as server:
        yield server.url


@pytest.fixture(scope="module")
def client(url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=url, timeout=30) as client:
        yield client


def publish(
    gateway: Gateway,
    endpoint: str,
    instances: dict[str, list[str]],
    *,
    traffic: dict[str, int] | None = None,
    mirror: dict[str, int] | None = None,
    auth_mode: str = "key",
    **options: object,
) -> str:
    """Publish ``endpoint`` with one deployment per ``instances`` entry; all traffic to the first."""
    deployments = {name: DeploymentRoute(name, **options) for name in instances}  # type: ignore[arg-type]
    gateway.publish(
        EndpointRoute(
            endpoint,
            auth_mode,
            (key_digest(KEY), key_digest(SECOND_KEY)),
            traffic if traffic is not None else {next(iter(instances)): 100},
            mirror or {},
            deployments,
        )
    )
    for name, addresses in instances.items():
        gateway.set_instances(endpoint, name, addresses)
    return f"/endpoints/{endpoint}/score"


def dead_tcp() -> str:
    return f"http://127.0.0.1:{free_port()}"


def assert_error(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["code"] == code
    assert error["message"]
    return error["message"]


def wait_for(condition: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


# -- auth -----------------------------------------------------------------------------


def test_key_auth(gateway: Gateway, instances: dict[str, Instance], client: httpx.Client) -> None:
    path = publish(gateway, "ep-keys", {"blue": [instances["blue"].address]})
    ok = client.post(path, json={"text": "hi"}, headers=AUTH)
    assert ok.status_code == 200
    assert ok.json() == {"echoed": "hi"}
    second = client.post(path, json={"text": "2"}, headers={"authorization": f"bearer {SECOND_KEY}"})
    assert second.status_code == 200

    wrong = client.post(path, json={"text": "x"}, headers={"authorization": "Bearer not-the-key"})
    assert "not valid" in assert_error(wrong, 401, "Unauthorized")
    assert wrong.headers["www-authenticate"] == "Bearer"
    missing = client.post(path, json={"text": "x"})
    assert "get-credentials" in assert_error(missing, 401, "Unauthorized")
    assert missing.headers["www-authenticate"] == "Bearer"
    basic = client.post(path, json={"text": "x"}, headers={"authorization": f"Basic {KEY}"})
    assert_error(basic, 401, "Unauthorized")
    for route in ("swagger.json", "v1/chat/completions"):
        method = "GET" if route.endswith(".json") else "POST"
        assert client.request(method, f"/endpoints/ep-keys/{route}").status_code == 401


def test_token_auth(gateway: Gateway, instances: dict[str, Instance], client: httpx.Client) -> None:
    path = publish(gateway, "ep-token", {"blue": [instances["blue"].address]}, auth_mode="aml_token")
    token = SIGNER.issue("ep-token").access_token
    assert (
        client.post(path, json={"text": "t"}, headers={"authorization": f"Bearer {token}"}).status_code == 200
    )

    other = SIGNER.issue("ep-other").access_token
    wrong = client.post(path, json={"text": "t"}, headers={"authorization": f"Bearer {other}"})
    assert "another endpoint" in assert_error(wrong, 401, "Unauthorized")
    expired = SIGNER.issue("ep-token", now=time.time() - 7200).access_token
    old = client.post(path, json={"text": "t"}, headers={"authorization": f"Bearer {expired}"})
    assert_error(old, 401, "Unauthorized")
    forged = TokenSigner(b"another-secret-0123456789abcdefgh").issue("ep-token").access_token
    assert client.post(path, json={}, headers={"authorization": f"Bearer {forged}"}).status_code == 401
    # A key is no token.
    assert client.post(path, json={"text": "t"}, headers=AUTH).status_code == 401


def test_short_lived_token_expires(
    gateway: Gateway, instances: dict[str, Instance], client: httpx.Client
) -> None:
    path = publish(gateway, "ep-ttl", {"blue": [instances["blue"].address]}, auth_mode="aml_token")
    token = TokenSigner(SIGNER.key, ttl_seconds=1).issue("ep-ttl").access_token
    headers = {"authorization": f"Bearer {token}"}
    assert client.post(path, json={"text": "t"}, headers=headers).status_code == 200
    time.sleep(2.1)
    assert client.post(path, json={"text": "t"}, headers=headers).status_code == 401


def test_unknown_endpoint(client: httpx.Client) -> None:
    response = client.post("/endpoints/no-such-endpoint/score", json={}, headers=AUTH)
    assert "no-such-endpoint" in assert_error(response, 404, "EndpointNotFound")
    assert response.headers["x-request-id"]


def test_withdrawn_endpoint_is_gone(
    gateway: Gateway, instances: dict[str, Instance], client: httpx.Client
) -> None:
    path = publish(gateway, "ep-gone", {"blue": [instances["blue"].address]})
    assert client.post(path, json={"text": "x"}, headers=AUTH).status_code == 200
    gateway.withdraw("ep-gone")
    assert_error(client.post(path, json={"text": "x"}, headers=AUTH), 404, "EndpointNotFound")


# -- choosing a deployment ---------------------------------------------------------------


def test_pin_header_chooses_a_deployment_even_without_traffic(
    gateway: Gateway, instances: dict[str, Instance], client: httpx.Client
) -> None:
    path = publish(
        gateway,
        "ep-pin",
        {"blue": [instances["blue"].address], "green": [instances["green"].address]},
        traffic={"blue": 100, "green": 0},
    )
    for header in ("azureml-model-deployment", "flowport-model-deployment"):
        response = client.post(path, json={"text": "p"}, headers={**AUTH, header: "green"})
        assert response.status_code == 200
        assert response.headers["azureml-model-deployment"] == "green"
    unknown = client.post(path, json={"text": "p"}, headers={**AUTH, "azureml-model-deployment": "red"})
    message = assert_error(unknown, 404, "DeploymentNotFound")
    assert "'red'" in message and "blue, green" in message


async def test_traffic_split_follows_the_weights(
    gateway: Gateway, instances: dict[str, Instance], url: str
) -> None:
    path = publish(
        gateway,
        "ep-split",
        {"blue": [instances["blue"].address], "green": [instances["green"].address]},
        traffic={"blue": 90, "green": 10},
    )
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        semaphore = asyncio.Semaphore(16)

        async def one(n: int) -> str:
            async with semaphore:
                response = await client.post(path, json={"text": str(n)}, headers=AUTH)
            assert response.status_code == 200
            return response.headers["azureml-model-deployment"]

        chosen = await asyncio.gather(*(one(n) for n in range(400)))
    green = chosen.count("green")
    # Binomial(400, 0.1): mean 40, standard deviation 6; this allows more than 4 of them.
    assert 14 <= green <= 66, green
    assert chosen.count("blue") == 400 - green


def test_no_deployment_with_traffic(
    gateway: Gateway, instances: dict[str, Instance], client: httpx.Client
) -> None:
    path = publish(gateway, "ep-zero", {"blue": [instances["blue"].address]}, traffic={"blue": 0})
    message = assert_error(
        client.post(path, json={"text": "x"}, headers=AUTH), 404, "NoDeploymentWithTraffic"
    )
    assert 'flowport online-endpoint update -n ep-zero --traffic "blue=100"' in message
    assert "azureml-model-deployment" in message
    pinned = client.post(path, json={"text": "x"}, headers={**AUTH, "azureml-model-deployment": "blue"})
    assert pinned.status_code == 200


def test_mirror_sends_copies_but_not_of_pinned_requests(
    gateway: Gateway, instances: dict[str, Instance], client: httpx.Client
) -> None:
    mirror = instances["mirror"]
    path = publish(
        gateway,
        "ep-mirror",
        {"blue": [instances["blue"].address], "shadow": [mirror.address]},
        traffic={"blue": 100, "shadow": 0},
        mirror={"shadow": 100},
    )
    before = mirror.scored()
    for n in range(10):
        response = client.post(path, json={"text": f"m{n}"}, headers=AUTH)
        assert response.status_code == 200
        assert response.headers["azureml-model-deployment"] == "blue"
    wait_for(lambda: mirror.scored() == before + 10)
    for n in range(5):
        pinned = client.post(
            path, json={"text": f"p{n}"}, headers={**AUTH, "azureml-model-deployment": "blue"}
        )
        assert pinned.status_code == 200
    time.sleep(0.3)
    assert mirror.scored() == before + 10
    text = gateway.render_metrics().decode()
    assert (
        'flowport_gateway_mirrored_requests_total{deployment="shadow",endpoint="ep-mirror",outcome="ok"} 10.0'
        in text
    )
    assert sum(entry["mirrored"] for entry in gateway.stats("ep-mirror")["deployments"]["shadow"]) == 10


def test_a_slow_mirror_never_delays_the_caller_and_extra_copies_are_dropped(
    instances: dict[str, Instance],
) -> None:
    gateway = Gateway(SIGNER, mirror_limit=2)
    path = publish(
        gateway,
        "ep-slowmirror",
        {"blue": [instances["blue"].address], "shadow": [instances["slow"].address]},
        traffic={"blue": 100},
        mirror={"shadow": 100},
        request_timeout_ms=10000,
    )
    with ThreadedServer(gateway, lifespan="on") as server, httpx.Client(base_url=server.url) as client:
        for n in range(4):
            started = time.monotonic()
            # echo_one answers at once; the slow flow the copy goes to sleeps 1.5 s.
            response = client.post(path, json={"text": f"{n}", "seconds": 1.5}, headers=AUTH)
            assert response.status_code == 200
            assert response.json() == {"echoed": f"{n}"}
            assert time.monotonic() - started < 1.0
        text = gateway.render_metrics().decode()
        assert 'endpoint="ep-slowmirror",outcome="dropped"} 2.0' in text
        wait_for(lambda: 'endpoint="ep-slowmirror",outcome="ok"} 2.0' in gateway.render_metrics().decode())


# -- status codes ------------------------------------------------------------------------


def test_instance_errors_become_424_with_their_status_and_reason(
    gateway: Gateway, instances: dict[str, Instance], client: httpx.Client
) -> None:
    path = publish(gateway, "ep-424", {"blue": [instances["blue"].address]})
    missing = client.post(path, json={}, headers=AUTH)
    assert missing.status_code == 424
    assert missing.headers["ms-azureml-model-error-statuscode"] == "400"
    assert missing.headers["ms-azureml-model-error-reason"] == "UserError"
    assert missing.headers["azureml-model-deployment"] == "blue"
    assert "Required input fields" in missing.json()["error"]["message"]

    plain = client.post(path, json={"text": "x"}, headers={**AUTH, "accept": "text/plain"})
    assert plain.status_code == 424
    assert plain.headers["ms-azureml-model-error-statuscode"] == "406"
    assert plain.headers["ms-azureml-model-error-reason"] == "UserError"

    # echo_one is no chat flow: the instance says so in OpenAI's error shape.
    chat = client.post("/endpoints/ep-424/v1/chat/completions", json={"messages": []}, headers=AUTH)
    assert chat.status_code == 424
    assert chat.headers["ms-azureml-model-error-statuscode"] == "400"
    assert chat.json()["error"]["code"] == "not_a_chat_flow"
    assert "is not a chat flow" in chat.json()["error"]["message"]


def test_instance_timeout_passes_through_as_408(
    gateway: Gateway, instances: dict[str, Instance], client: httpx.Client
) -> None:
    path = publish(gateway, "ep-408i", {"blue": [instances["impatient"].address]})
    response = client.post(path, json={"seconds": 1}, headers=AUTH)
    assert response.status_code == 408
    assert "ms-azureml-model-error-statuscode" not in response.headers
    assert response.headers["azureml-model-deployment"] == "blue"


def test_gateway_answers_408_when_the_instance_takes_too_long(
    gateway: Gateway, instances: dict[str, Instance], client: httpx.Client
) -> None:
    path = publish(gateway, "ep-408g", {"blue": [instances["slow"].address]}, request_timeout_ms=100)
    started = time.monotonic()
    response = client.post(path, json={"seconds": 3}, headers=AUTH)
    elapsed = time.monotonic() - started
    message = assert_error(response, 408, "RequestTimeout")
    assert "request_timeout_ms" in message
    assert response.headers["azureml-model-deployment"] == "blue"
    assert 0.1 + GRACE - 0.05 < elapsed < 0.1 + GRACE + 1.0


async def test_too_many_requests_in_flight_get_429(
    gateway: Gateway, instances: dict[str, Instance], url: str
) -> None:
    # 2 x 1 per instance x 2 instances: four in flight at most.
    path = publish(
        gateway,
        "ep-429",
        {"blue": [instances["slow"].address]},
        max_concurrent_requests_per_instance=1,
        instance_count=2,
    )
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        started = time.monotonic()
        responses = await asyncio.gather(
            *(client.post(path, json={"seconds": 1}, headers=AUTH) for _ in range(10))
        )
        refused = [r for r in responses if r.status_code == 429]
        assert sorted(r.status_code for r in responses) == [200] * 4 + [429] * 6
        for response in refused:
            assert response.headers["retry-after"] == "1"
            assert response.headers["azureml-model-deployment"] == "blue"
            assert response.json()["error"]["code"] == "TooManyRequests"
        assert time.monotonic() - started < 3
        # Once they are done the deployment has room again.
        assert (await client.post(path, json={"seconds": 0}, headers=AUTH)).status_code == 200


def test_no_ready_instance_is_503(gateway: Gateway, client: httpx.Client) -> None:
    path = publish(gateway, "ep-503", {"blue": []})
    response = client.post(path, json={"text": "x"}, headers=AUTH)
    assert_error(response, 503, "ServiceUnavailable")
    assert response.headers["azureml-model-deployment"] == "blue"


def test_unreachable_instance_is_502(gateway: Gateway, sockets: Path, client: httpx.Client) -> None:
    path = publish(gateway, "ep-502", {"blue": [dead_tcp()]})
    response = client.post(path, json={"text": "x"}, headers=AUTH)
    assert_error(response, 502, "BadGateway")
    assert response.headers["azureml-model-deployment"] == "blue"
    gateway.set_instances("ep-502", "blue", [f"unix:{sockets / 'nobody.sock'}"])
    assert_error(client.post(path, json={"text": "x"}, headers=AUTH), 502, "BadGateway")


def test_a_dead_instance_is_retried_on_a_ready_one(
    gateway: Gateway, instances: dict[str, Instance], sockets: Path, client: httpx.Client
) -> None:
    for dead in (dead_tcp(), f"unix:{sockets / 'gone.sock'}"):
        path = publish(gateway, "ep-retry", {"blue": [dead, instances["blue"].address]})
        for n in range(15):
            response = client.post(path, json={"text": f"r{n}"}, headers=AUTH)
            assert response.status_code == 200, response.text
            assert response.json() == {"echoed": f"r{n}"}
    retried = re.search(
        r'retries_total\{deployment="blue",endpoint="ep-retry"\} (\S+)', gateway.render_metrics().decode()
    )
    assert retried and float(retried.group(1)) >= 2


class ClosingServer:
    """Accepts connections and closes each one as soon as the request arrives: no response byte."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.address = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.accepted = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            with conn:
                conn.recv(65536)

    def close(self) -> None:
        self.sock.close()


def test_a_connection_closed_before_any_response_is_retried(
    gateway: Gateway, instances: dict[str, Instance], client: httpx.Client
) -> None:
    closing = ClosingServer()
    try:
        path = publish(gateway, "ep-closing", {"blue": [closing.address]})
        assert_error(client.post(path, json={"text": "x"}, headers=AUTH), 502, "BadGateway")
        assert closing.accepted == 2  # tried, then retried (no other instance to go to)
        gateway.set_instances("ep-closing", "blue", [closing.address, instances["blue"].address])
        for n in range(20):
            assert client.post(path, json={"text": f"c{n}"}, headers=AUTH).status_code == 200
        assert closing.accepted > 2
    finally:
        closing.close()


def test_withdrawn_instances_are_not_chosen_and_their_clients_close(
    gateway: Gateway, instances: dict[str, Instance], client: httpx.Client
) -> None:
    blue = instances["blue"]
    path = publish(gateway, "ep-moves", {"blue": [dead_tcp()]})
    assert client.post(path, json={"text": "x"}, headers=AUTH).status_code == 502
    gateway.set_instances("ep-moves", "blue", [blue.address])
    assert client.post(path, json={"text": "x"}, headers=AUTH).status_code == 200
    (upstream,) = gateway._states[("ep-moves", "blue")].pool.active
    assert upstream.address == blue.address
    gateway.set_instances("ep-moves", "blue", [dead_tcp()])
    assert client.post(path, json={"text": "x"}, headers=AUTH).status_code == 502
    wait_for(lambda: upstream.closed)


def test_rolling_update_fails_no_request(
    gateway: Gateway, instances: dict[str, Instance], sockets: Path, client: httpx.Client
) -> None:
    """Old instances go away (SIGTERM, even before they are withdrawn) while requests keep coming."""
    old = [Instance(ECHO, sockets, f"old{n}") for n in range(2)]
    for instance in old:
        instance.wait_ready()
    path = publish(gateway, "ep-rolling", {"blue": [i.address for i in old]})
    failures: list[str] = []
    done = threading.Event()

    def hammer() -> None:
        with httpx.Client(base_url=str(client.base_url), timeout=30) as own:
            n = 0
            while not done.is_set():
                response = own.post(path, json={"text": f"{n}"}, headers=AUTH)
                if response.status_code != 200:
                    failures.append(f"{response.status_code} {response.text}")
                n += 1

    workers = [threading.Thread(target=hammer) for _ in range(4)]
    for worker in workers:
        worker.start()
    try:
        time.sleep(0.3)
        # The new instance joins; one old one dies before it is withdrawn, the other after.
        gateway.set_instances("ep-rolling", "blue", [*(i.address for i in old), instances["blue"].address])
        old[0].stop()
        time.sleep(0.3)
        gateway.set_instances("ep-rolling", "blue", [old[1].address, instances["blue"].address])
        time.sleep(0.2)
        gateway.set_instances("ep-rolling", "blue", [instances["blue"].address])
        old[1].stop()
        time.sleep(0.3)
    finally:
        done.set()
        for worker in workers:
            worker.join(30)
        for instance in old:
            instance.stop()
    assert failures == []


# -- forwarding -------------------------------------------------------------------------


def test_response_headers_and_request_ids(
    gateway: Gateway, instances: dict[str, Instance], client: httpx.Client
) -> None:
    blue = instances["blue"]
    path = publish(gateway, "ep-headers", {"blue": [blue.address]})
    response = client.post(path, json={"text": "h"}, headers=AUTH)
    assert response.headers["azureml-model-deployment"] == "blue"
    generated = response.headers["x-request-id"]
    assert uuid.UUID(generated).version == 4
    assert response.headers.get_list("x-request-id") == [generated]
    assert len(response.headers.get_list("server")) == 1
    assert response.headers["content-type"] == "application/json"

    mine = f"req-{uuid.uuid4()}"
    sent = {**AUTH, "x-request-id": mine, "x-ms-client-request-id": "client-42"}
    echoed = client.post(path, json={"text": "h"}, headers=sent)
    assert echoed.headers["x-request-id"] == mine
    assert echoed.headers["x-ms-client-request-id"] == "client-42"
    # The instance got the same id: it logs it.
    wait_for(lambda: mine in blue.log.read_text() and generated in blue.log.read_text())

    error = client.post(path, json={"text": "h"}, headers={**sent, "authorization": "Bearer wrong"})
    assert error.headers["x-request-id"] == mine
    assert error.headers["x-ms-client-request-id"] == "client-42"


def test_headers_forwarded_to_the_instance(gateway: Gateway, client: httpx.Client) -> None:
    """What an instance receives, seen by a recording app on a real port."""
    seen: list[dict[str, str]] = []
    keys: list[bytes] = []

    async def recorder(scope, receive, send) -> None:  # type: ignore[no-untyped-def]
        if scope["type"] != "http":
            return
        seen.append({k.decode(): v.decode() for k, v in scope["headers"]})
        keys.extend(v for k, v in scope["headers"] if k == HEADER)
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/x")]})
        await send({"type": "http.response.body", "body": b"ok"})

    with ThreadedServer(recorder) as server:
        path = publish(gateway, "ep-forward", {"blue": [server.url]})
        response = client.post(
            path,
            content=b"raw body",
            headers={
                **AUTH,
                "content-type": "application/json",
                "accept": "application/json",
                "x-custom": "kept",
                "connection": "keep-alive, x-hop",
                "x-hop": "dropped",
                "te": "trailers",
                HEADER.decode(): "forged",
            },
        )
    assert response.status_code == 200 and response.text == "ok"
    # an instance on a network address gets its deployment's key, never a client's
    assert keys == [derive(INSTANCE_SECRET, "ep-forward", "blue").encode()]
    headers = seen[-1]
    assert "authorization" not in headers and "x-hop" not in headers and "te" not in headers
    assert headers["content-type"] == "application/json"
    assert headers["accept"] == "application/json"
    assert headers["x-custom"] == "kept"
    assert headers["x-request-id"] == response.headers["x-request-id"]
    assert headers["content-length"] == str(len(b"raw body"))
    assert headers["user-agent"] == response.request.headers["user-agent"]


def test_odd_request_ids_are_replaced_not_echoed_or_forwarded(gateway: Gateway, client: httpx.Client) -> None:
    """Long or non-ASCII ids never reach the answer or the instance; Azure's client id rule holds."""
    seen: list[dict[bytes, list[bytes]]] = []

    async def recorder(scope, receive, send) -> None:  # type: ignore[no-untyped-def]
        if scope["type"] != "http":
            return
        found: dict[bytes, list[bytes]] = {}
        for name, value in scope["headers"]:
            found.setdefault(name, []).append(value)
        seen.append(found)
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/x")]})
        await send({"type": "http.response.body", "body": b"ok"})

    with ThreadedServer(recorder) as server:
        path = publish(gateway, "ep-ids", {"blue": [server.url]})
        for bad_id, bad_client in (
            (b"r" * 129, b"c" * 41),
            ("caf\u00e9".encode("latin-1"), "caf\u00e9".encode("latin-1")),
            (b"two words", b"no spaces!"),
            (b"tab\tinside", b"dots.are.not.allowed"),
        ):
            response = client.post(
                path,
                content=b"{}",
                headers={**AUTH, "x-request-id": bad_id, "x-ms-client-request-id": bad_client},
            )
            assert response.status_code == 200
            fresh = response.headers["x-request-id"]
            assert uuid.UUID(fresh).version == 4
            assert "x-ms-client-request-id" not in response.headers
            assert seen[-1][b"x-request-id"] == [fresh.encode()]
            assert b"x-ms-client-request-id" not in seen[-1]
        good = {"x-request-id": "r" * 128, "x-ms-client-request-id": "c-" + "9" * 38}
        response = client.post(path, content=b"{}", headers={**AUTH, **good})
        assert response.headers["x-request-id"] == good["x-request-id"]
        assert seen[-1][b"x-request-id"] == [good["x-request-id"].encode()]
        assert seen[-1][b"x-ms-client-request-id"] == [good["x-ms-client-request-id"].encode()]
        refused = client.post(path, content=b"{}", headers={"x-request-id": b"\xff" * 200})
        assert refused.status_code == 401 and uuid.UUID(refused.headers["x-request-id"]).version == 4


def test_swagger_and_chat_routes(
    gateway: Gateway, instances: dict[str, Instance], client: httpx.Client
) -> None:
    publish(gateway, "ep-chat", {"blue": [instances["drip"].address]})
    swagger = client.get("/endpoints/ep-chat/swagger.json", headers=AUTH)
    assert swagger.status_code == 200
    assert swagger.json()["openapi"] == "3.0.0"
    assert swagger.json()["info"]["x-flow-name"] == "drip"
    assert swagger.headers["azureml-model-deployment"] == "blue"

    body = {"messages": [{"role": "user", "content": "hello there"}], "pause": 0}
    chat = client.post("/endpoints/ep-chat/v1/chat/completions", json=body, headers=AUTH)
    assert chat.status_code == 200
    assert chat.json()["choices"][0]["message"]["content"] == "hello there"

    with client.stream(
        "POST", "/endpoints/ep-chat/v1/chat/completions", json={**body, "stream": True}, headers=AUTH
    ) as stream:
        lines = [line for line in stream.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    pieces = [json.loads(line[6:])["choices"][0]["delta"].get("content", "") for line in lines[:-1]]
    assert "".join(pieces) == "hello there"


def test_events_stream_through_unbuffered(
    gateway: Gateway, instances: dict[str, Instance], client: httpx.Client
) -> None:
    path = publish(gateway, "ep-stream", {"blue": [instances["drip"].address]})
    headers = {**AUTH, "accept": "text/event-stream"}
    arrivals: list[tuple[float, bytes]] = []
    started = time.monotonic()
    with client.stream(
        "POST", path, json={"question": "one two three four", "pause": 0.4}, headers=headers
    ) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["azureml-model-deployment"] == "blue"
        for chunk in r.iter_raw():
            arrivals.append((time.monotonic() - started, chunk))
    frames = [json.loads(f[6:]) for f in b"".join(c for _, c in arrivals).decode().split("\n\n") if f]
    assert frames == [{"answer": "one"}, {"answer": " two"}, {"answer": " three"}, {"answer": " four"}]
    total = arrivals[-1][0]
    assert total >= 1.2
    assert arrivals[0][0] < total - 0.8, arrivals  # the first frame came long before the last


def test_a_client_leaving_a_stream_frees_its_slot(
    gateway: Gateway, instances: dict[str, Instance], url: str
) -> None:
    path = publish(gateway, "ep-leave", {"blue": [instances["drip"].address]})
    state = gateway._states[("ep-leave", "blue")]
    words = " ".join(f"w{n}" for n in range(20))
    with httpx.Client(base_url=url, timeout=30) as own:
        stream_headers = {**AUTH, "accept": "text/event-stream"}
        with own.stream("POST", path, json={"question": words, "pause": 0.3}, headers=stream_headers) as r:
            chunks = r.iter_raw()  # kept: a dropped iterator closes the response at once
            next(chunks)
            assert state.in_flight == 1
    wait_for(lambda: state.in_flight == 0, timeout=2.0)  # the whole stream would take 6 s
    wait_for(lambda: all(u.outstanding == 0 for u in state.pool.active), timeout=2.0)


# -- metrics, stats, data collection -------------------------------------------------------


def test_metrics_text(gateway: Gateway, instances: dict[str, Instance], client: httpx.Client) -> None:
    path = publish(gateway, "ep-metrics", {"blue": [instances["blue"].address]})
    for _ in range(3):
        client.post(path, json={"text": "m"}, headers=AUTH)
    client.post(path, json={}, headers=AUTH)
    client.post(path, json={"text": "m"})
    text = gateway.render_metrics().decode()
    assert 'flowport_gateway_requests_total{deployment="blue",endpoint="ep-metrics",status="200"} 3.0' in text
    assert 'flowport_gateway_requests_total{deployment="blue",endpoint="ep-metrics",status="424"} 1.0' in text
    assert 'flowport_gateway_requests_total{deployment="",endpoint="ep-metrics",status="401"} 1.0' in text
    assert 'flowport_gateway_request_seconds_count{deployment="blue",endpoint="ep-metrics"} 4.0' in text
    assert 'flowport_gateway_in_flight{deployment="blue",endpoint="ep-metrics"} 0.0' in text
    hidden = client.get("/metrics")  # the server serves it, to the admin only
    assert hidden.status_code == 404 and hidden.json()["error"]["code"] == "NotFound"


def series(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith("#")]


async def test_unknown_names_never_grow_the_metrics(instances: dict[str, Instance]) -> None:
    """Thousands of requests naming random endpoints, deployments and routes add no series."""
    gateway = Gateway(SIGNER, timeout_grace_seconds=GRACE)
    path = publish(gateway, "ep-known", {"blue": [instances["blue"].address]})
    with ThreadedServer(gateway, lifespan="on") as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            semaphore = asyncio.Semaphore(16)

            async def probe(n: int) -> None:
                name = uuid.uuid4().hex
                async with semaphore:
                    match n % 4:
                        case 0:
                            await client.post(f"/endpoints/{name}/score", json={}, headers=AUTH)
                        case 1:
                            pin = {"azureml-model-deployment": name}
                            await client.post(path, json={"text": "x"}, headers={**AUTH, **pin})
                        case 2:
                            pin = {"flowport-model-deployment": name, "authorization": f"Bearer {name}"}
                            await client.post(path, json={"text": "x"}, headers=pin)
                        case 3:
                            await client.get(f"/endpoints/{name}/{name}")

            assert (await client.post(path, json={"text": "x"}, headers=AUTH)).status_code == 200
            await asyncio.gather(*(probe(n) for n in range(40)))
            before = gateway.render_metrics().decode()
            await asyncio.gather(*(probe(n) for n in range(3000)))
            after = gateway.render_metrics().decode()
    assert len(series(after)) == len(series(before)), set(series(after)) - set(series(before))
    assert len(after) < 20_000
    assert 'flowport_gateway_requests_total{deployment="",endpoint="<unknown>",status="404"} 760.0' in after
    assert 'flowport_gateway_requests_total{deployment="",endpoint="ep-known",status="404"} 760.0' in after
    assert 'flowport_gateway_requests_total{deployment="",endpoint="ep-known",status="401"} 760.0' in after
    assert 'flowport_gateway_requests_total{deployment="blue",endpoint="ep-known",status="200"} 1.0' in after


def test_withdrawn_deployments_take_their_series_and_stats(
    gateway: Gateway, instances: dict[str, Instance], client: httpx.Client
) -> None:
    both = {"blue": [instances["blue"].address], "green": [instances["green"].address]}
    path = publish(gateway, "ep-shrink", both)
    for name in both:
        assert client.post(path, json={"text": "x"}, headers={**AUTH, "azureml-model-deployment": name})
    text = gateway.render_metrics().decode()
    assert 'deployment="green",endpoint="ep-shrink"' in text
    # The runtime withdraws green's instances, then the control plane publishes the route without it.
    gateway.set_instances("ep-shrink", "green", [])
    publish(gateway, "ep-shrink", {"blue": [instances["blue"].address]})
    text = gateway.render_metrics().decode()
    assert 'deployment="green",endpoint="ep-shrink"' not in text
    assert 'deployment="blue",endpoint="ep-shrink"' in text
    assert set(gateway.stats("ep-shrink")["deployments"]) == {"blue"}
    # A deployment whose instances were reported but which was never routed goes when they go.
    gateway.set_instances("ep-shrink", "red", [instances["green"].address])
    gateway.render_metrics()
    gateway.set_instances("ep-shrink", "red", [])
    assert 'deployment="red"' not in gateway.render_metrics().decode()
    assert set(gateway.stats("ep-shrink")["deployments"]) == {"blue"}
    gateway.withdraw("ep-shrink")
    assert 'endpoint="ep-shrink"' not in gateway.render_metrics().decode()
    assert gateway.stats("ep-shrink")["deployments"] == {}


def test_stats_last_hour_by_minute(
    gateway: Gateway, instances: dict[str, Instance], client: httpx.Client
) -> None:
    path = publish(gateway, "ep-stats", {"blue": [instances["blue"].address], "green": []})
    for _ in range(5):
        client.post(path, json={"text": "s"}, headers=AUTH)
    client.post(path, json={}, headers=AUTH)
    stats = gateway.stats("ep-stats")
    assert set(stats["deployments"]) == {"blue", "green"}
    series = stats["deployments"]["blue"]
    assert len(series) == MINUTES
    assert datetime.strptime(series[-1]["time"], "%Y-%m-%dT%H:%M:%SZ") <= datetime.now(UTC).replace(
        tzinfo=None
    )
    recent = series[-1] if series[-1]["total"] else series[-2]  # a minute may have turned
    total = sum(entry["requests"].get("200", 0) for entry in series[-2:])
    assert total == 5
    assert sum(entry["requests"].get("424", 0) for entry in series[-2:]) == 1
    latency = recent["latency_ms"]
    assert 0 < latency["p50"] <= latency["p90"] <= latency["p99"] < 5000
    assert series[0]["total"] == 0 and series[0]["latency_ms"]["p50"] is None
    assert all(entry["total"] == 0 for entry in stats["deployments"]["green"])
    assert gateway.stats("ep-unknown")["deployments"] == {}


def read_collected(root: Path) -> list[dict[str, object]]:
    return [
        orjson.loads(line)
        for path in sorted(root.rglob("*.jsonl"))
        for line in path.read_bytes().splitlines()
    ]


def test_data_collection_writes_sampled_requests(
    gateway: Gateway, instances: dict[str, Instance], client: httpx.Client
) -> None:
    collect = DataCollection(request=True, response=True, sampling_rate=1.0, rolling_rate="Minute")
    path = publish(gateway, "ep-collect", {"blue": [instances["blue"].address]}, data_collection=collect)
    ids = [f"dc-{n}" for n in range(3)]
    for n, request_id in enumerate(ids):
        response = client.post(path, json={"text": f"c{n}"}, headers={**AUTH, "x-request-id": request_id})
        assert response.status_code == 200
    client.post(path, json={}, headers={**AUTH, "x-request-id": "dc-error"})
    assert gateway.collector is not None and gateway.collector.flush()
    root = gateway.collector.root / "ep-collect" / "blue"
    files = list(root.rglob("*.jsonl"))
    assert files and all(
        re.fullmatch(r"\d{4}/\d{2}/\d{2}/\d{2}/\d{2}\.jsonl", str(f.relative_to(root))) for f in files
    )
    records = {r["request_id"]: r for r in read_collected(root)}
    assert set(records) == {*ids, "dc-error"}
    first = records["dc-0"]
    assert first["endpoint"] == "ep-collect" and first["deployment"] == "blue"
    assert first["status"] == 200
    assert first["request"] == {"text": "c0"}
    assert first["response"] == {"echoed": "c0"}
    assert isinstance(first["latency_ms"], float) and first["latency_ms"] > 0
    assert datetime.fromisoformat(str(first["time"]).replace("Z", "+00:00")).tzinfo is not None
    assert records["dc-error"]["status"] == 424
    assert records["dc-error"]["response"]["error"]["code"] == "UserError"  # type: ignore[index]


def test_data_collection_of_events_sampling_and_parts(
    gateway: Gateway, instances: dict[str, Instance], client: httpx.Client
) -> None:
    events_only = DataCollection(request=False, response=True, rolling_rate="Day")
    path = publish(
        gateway, "ep-collect-sse", {"blue": [instances["drip"].address]}, data_collection=events_only
    )
    headers = {**AUTH, "accept": "text/event-stream", "x-request-id": "dc-sse"}
    assert client.post(path, json={"question": "a b", "pause": 0}, headers=headers).status_code == 200
    never = DataCollection(request=True, response=True, sampling_rate=0.0)
    quiet = publish(gateway, "ep-collect-none", {"blue": [instances["blue"].address]}, data_collection=never)
    for _ in range(5):
        assert client.post(quiet, json={"text": "q"}, headers=AUTH).status_code == 200
    assert gateway.collector is not None and gateway.collector.flush()
    root = gateway.collector.root
    (record,) = read_collected(root / "ep-collect-sse")
    assert record["request_id"] == "dc-sse"
    assert "request" not in record
    assert record["response"] == [{"answer": "a"}, {"answer": " b"}]
    assert re.fullmatch(
        r"\d{4}/\d{2}/\d{2}\.jsonl",
        str(
            next((root / "ep-collect-sse" / "blue").rglob("*.jsonl")).relative_to(
                root / "ep-collect-sse" / "blue"
            )
        ),
    )
    assert not (root / "ep-collect-none").exists()


def test_partitions_follow_the_rolling_rate() -> None:
    when = datetime(2026, 11, 21, 14, 5, 9, tzinfo=UTC)
    assert partition("Minute", when) == "2026/11/21/14/05"
    assert partition("Hour", when) == "2026/11/21/14"
    assert partition("Day", when) == "2026/11/21"
    assert partition("Month", when) == "2026/11"
    assert partition("Year", when) == "2026"


def test_collector_drops_and_counts_what_it_cannot_write(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    dropped: list[str] = []
    record = Record("r", "ep", "blue", time.time(), 200, 1.0, "Year", request=b"{}", response=b"{}")
    broken = DataCollector(blocker, on_drop=dropped.append)
    broken.submit(record)
    assert broken.flush()
    assert dropped == ["write_error"]
    broken.close()

    # A disk that hangs: the record's file is a FIFO nobody reads, so the first write blocks.
    root = tmp_path / "out"
    target = root / "ep" / "blue" / f"{datetime.now(UTC).year}.jsonl"
    target.parent.mkdir(parents=True)
    os.mkfifo(target)
    written: list[int] = []
    hanging = DataCollector(root, on_drop=dropped.append, on_written=written.append, queue_size=2)
    started = time.monotonic()
    for _ in range(10):
        hanging.submit(record)  # never blocks
    assert time.monotonic() - started < 0.5
    assert dropped.count("queue_full") >= 7
    reader = os.open(target, os.O_RDONLY | os.O_NONBLOCK)
    try:
        assert hanging.flush()
        data = b""
        while chunk := os.read(reader, 65536):
            data += chunk
    finally:
        os.close(reader)
    hanging.close()
    lines = data.splitlines()
    assert 1 <= len(lines) <= 3 and sum(written) == len(lines)
    assert orjson.loads(lines[0])["request_id"] == "r"


# -- the transport ------------------------------------------------------------------------


def test_large_bodies_pass_both_ways(
    gateway: Gateway, instances: dict[str, Instance], client: httpx.Client
) -> None:
    path = publish(gateway, "ep-large", {"blue": [instances["blue"].address]})
    text = "0123456789abcdef" * 200_000  # 3.2 MB each way: the reader pauses and resumes
    response = client.post(path, json={"text": text}, headers=AUTH)
    assert response.status_code == 200
    assert response.json() == {"echoed": text}


def test_the_gateway_refuses_bodies_over_its_limit(instances: dict[str, Instance]) -> None:
    small = Gateway(SIGNER, max_body_bytes=100)
    path = publish(small, "ep-limit", {"blue": [instances["blue"].address]})
    with ThreadedServer(small, lifespan="on") as server, httpx.Client(base_url=server.url) as client:
        assert client.post(path, json={"text": "short"}, headers=AUTH).status_code == 200
        refused = client.post(path, json={"text": "x" * 200}, headers=AUTH)
        assert "100 bytes" in assert_error(refused, 413, "RequestTooLarge")
        chunked = client.post(path, content=iter([b'{"text": "', b"x" * 200, b'"}']), headers=AUTH)
        assert_error(chunked, 413, "RequestTooLarge")


async def test_the_transport_keeps_one_connection_alive(instances: dict[str, Instance]) -> None:
    from flowport import transport

    upstream = transport.HTTP11Transport(instances["blue"].address)
    for n in range(3):  # the same kept-alive connection each time
        body = f'{{"text": "t{n}"}}'.encode()
        response = await upstream.request("POST", b"/score", [(b"content-type", b"application/json")], body)
        assert response.status_code == 200 and await response.aread() == f'{{"echoed":"t{n}"}}'.encode()
        await response.aclose()
    assert len(upstream._open) == 1
    health = await upstream.request("GET", b"/health", [])
    assert b'"Healthy"' in await health.aread()
    await health.aclose()
    await upstream.aclose()
    with pytest.raises(transport.ConnectError):
        await transport.HTTP11Transport(dead_tcp()).request("GET", b"/health", [])


def test_unknown_routes_are_404_and_wrong_methods_405(client: httpx.Client) -> None:
    for path in ("/endpoints/ep/nothing", "/endpoints//score", "/endpoints/ep"):
        missing = client.post(path, json={})
        assert missing.status_code == 404, path
        assert (
            missing.json()["error"]["code"] == "NotFound" and "/score" in missing.json()["error"]["message"]
        )
    wrong = client.get("/endpoints/ep/score")
    assert wrong.status_code == 405 and wrong.headers["allow"] == "POST"
    assert wrong.json()["error"]["code"] == "MethodNotAllowed"
    assert client.delete("/endpoints/ep/swagger.json").headers["allow"] == "GET"


class BrokenGateway(Gateway):
    """A gateway with a bug on the request path: choosing a deployment raises."""

    @staticmethod
    def _choose(table, pinned):  # type: ignore[no-untyped-def,override]
        raise RuntimeError("a bug")


def test_a_gateway_500_closes_the_keep_alive_connection(instances: dict[str, Instance]) -> None:
    gateway = BrokenGateway(SIGNER, timeout_grace_seconds=GRACE)
    publish(gateway, "ep-bug", {"blue": [instances["blue"].address]})
    with (
        ThreadedServer(gateway, lifespan="on") as server,
        socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw,
    ):
        body = b'{"text": "x"}'
        request = (
            b"POST /endpoints/ep-bug/score HTTP/1.1\r\nhost: gw\r\nconnection: keep-alive\r\n"
            b"x-request-id: bug-1\r\nauthorization: Bearer " + KEY.encode() + b"\r\n"
            b"content-type: application/json\r\ncontent-length: " + str(len(body)).encode() + b"\r\n\r\n"
        )
        raw.sendall(request + body)
        received = b""
        while chunk := raw.recv(65536):  # the server closes: recv returns b"" instead of blocking
            received += chunk
    head, _, payload = received.partition(b"\r\n\r\n")
    lines = head.decode().lower().split("\r\n")
    assert lines[0].startswith("http/1.1 500")
    assert "connection: close" in lines and "x-request-id: bug-1" in lines
    assert orjson.loads(payload)["error"]["code"] == "InternalServerError"
