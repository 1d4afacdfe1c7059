"""Compute targets: ``flowport compute ...``, an endpoint's ``compute: azureml:NAME``.

Runs against SQLite and, with FLOWPORT_TEST_DATABASE_URL, PostgreSQL (the new table's migration).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.endpoint_harness import Flowport


@pytest.fixture
def flowport(home: Path, database_url: str) -> Iterator[Flowport]:
    with Flowport(home, database_url) as server:
        yield server


def test_computes_are_registered_listed_and_picked_by_an_endpoint(flowport: Flowport, tmp_path: Path) -> None:
    fp = flowport
    assert [c["name"] for c in fp.ok("GET", "/computes")] == ["local"]
    fp.cli("compute", "create", "--name", "gpu-ray", "--type", "ray", "--address", "10.0.0.5:6379")
    compute_file = tmp_path / "k8s.yml"
    compute_file.write_text(
        "$schema: https://azuremlschemas.azureedge.net/latest/kubernetesCompute.schema.json\n"
        "name: aks\ntype: kubernetes\nnamespace: prod\ncontext: aks-admin\n"
        "resource_id: /subscriptions/x/resourceGroups/y/providers/Microsoft.Kubernetes/connectedClusters/z\n"
    )
    created = fp.cli("compute", "create", "--file", str(compute_file), "-o", "json")
    assert "resource_id: Azure-only" in created.stderr
    assert json.loads(created.stdout)["namespace"] == "prod"
    listed = json.loads(fp.cli("compute", "list", "-o", "json").stdout)
    assert [(c["name"], c["type"]) for c in listed] == [
        ("local", "local"),
        ("aks", "kubernetes"),
        ("gpu-ray", "ray"),
    ]
    shown = json.loads(fp.cli("compute", "show", "-n", "gpu-ray", "-o", "json").stdout)
    assert shown["address"] == "10.0.0.5:6379"

    # an endpoint picks a compute as in Azure; an unknown one is one clear error
    unknown = fp.api("POST", "/endpoints", json={"spec": {"name": "shop", "compute": "azureml:nope"}})
    assert unknown.status_code == 400
    assert unknown.json()["error"]["message"].startswith("compute: 'nope' is not a registered compute")
    cli = fp.cli("online-endpoint", "create", "-n", "shop", "--set", "compute=azureml:nope", check=False)
    assert cli.returncode == 1 and "'nope' is not a registered compute" in cli.stderr
    assert "Traceback" not in cli.stderr
    endpoint = fp.endpoint("shop", compute="azureml:aks")
    assert endpoint["compute"] == "azureml:aks" and endpoint["kind"] == "K8S"
    assert "compute" not in fp.endpoint("home")  # local, the default
    moved = fp.api("PATCH", "/endpoints/shop", json={"spec": {"compute": "azureml:gpu-ray"}})
    assert moved.status_code == 400 and moved.json()["error"]["code"] == "ComputeImmutable"

    # a deployment on a kubernetes compute is stored for export, not started here
    body = fp.ok(
        "POST",
        "/endpoints/shop/deployments",
        params={"name": "blue"},
        json={"spec": {"model": {"path": str(Path(__file__).parent / "endpoint_flows" / "probe")}}},
    )
    assert "online-endpoint export -n shop --format kubernetes" in " ".join(body["notes"])
    assert fp.wait(body["operation"])["status"] == "Succeeded"
    blue = fp.ok("GET", "/endpoints/shop/deployments/blue")
    assert blue["instances"] == [] and blue["provisioning_state"] == "Succeeded"
    exported = fp.ok("POST", "/endpoints/shop/export")
    assert exported["deployments"][0]["name"] == "blue" and exported["endpoint"]["namespace"] == "prod"
    manifests = fp.cli("online-endpoint", "export", "-n", "shop", "--format", "kubernetes").stdout
    assert "namespace: prod" in manifests  # the compute's namespace, unless --namespace says

    # a compute in use cannot go; the built-in one never
    in_use = fp.api("DELETE", "/computes/aks")
    assert in_use.status_code == 409 and "shop" in in_use.json()["error"]["message"]
    assert fp.api("DELETE", "/computes/local").status_code == 400
    fp.cli("compute", "delete", "-n", "gpu-ray", "--yes")
    assert fp.api("GET", "/computes/gpu-ray").status_code == 404

    fp.restart()  # stored, and the kubernetes deployment is not started on recovery either
    assert [c["name"] for c in fp.ok("GET", "/computes")] == ["local", "aks"]
    assert fp.ok("GET", "/endpoints/shop/deployments/blue")["provisioning_state"] == "Succeeded"


def test_bad_compute_specs_name_the_field(flowport: Flowport) -> None:
    cases = [
        ({"name": "r1", "type": "ray"}, "address: a ray compute needs the cluster's address"),
        ({"name": "r1", "type": "slurm"}, "type: must be one of local, ray, kubernetes"),
        ({"name": "local", "type": "ray", "address": "h:1"}, "name: 'local' is the built-in compute"),
        ({"name": "k1", "type": "kubernetes", "address": "h:1"}, "address: only a ray compute"),
        ({"name": "k1", "type": "kubernetes", "namespace": "Prod_1"}, "namespace: 'Prod_1' is not"),
    ]
    for spec, message in cases:
        response = flowport.api("POST", "/computes", json={"spec": spec})
        assert response.status_code == 400, spec
        assert message in response.json()["error"]["message"], response.json()
    flowport.ok("POST", "/computes", json={"spec": {"name": "r1", "type": "ray", "address": "h:1"}})
    again = flowport.api("POST", "/computes", json={"spec": {"name": "r1", "type": "ray", "address": "h:1"}})
    assert again.status_code == 409
