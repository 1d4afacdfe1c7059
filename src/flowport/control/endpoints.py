"""Endpoints and their deployments: the state, the rules, and turning them into running parts.

The control plane is the only writer of the store. After every change it pushes the
endpoint's route to the gateway and hands deployments to the runtime as plans.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flowport.connections import Cipher, ConnectionService, ConnectionSpecError, StaticConnections
from flowport.connections.references import parse_connection_reference, resolve_connection_references
from flowport.control import scaling
from flowport.control.computes import Computes
from flowport.control.environments import EnvironmentRegistry, conda_environment, read_dockerfile
from flowport.control.errors import ApiError
from flowport.control.models import ModelRegistry, flow_folder_name, snapshot_files
from flowport.control.operations import Operations
from flowport.control.specs import DeploymentSpec, EndpointSpec, ModelSpec, check_mirror_shape
from flowport.dataplane.client import DataPlaneClient, DataPlaneFailed
from flowport.flow import FlowDef, FlowError
from flowport.flow.flex import load_any_flow as load_flow
from flowport.gateway import DataCollection, DeploymentRoute, EndpointRoute, TokenSigner, key_digest
from flowport.gateway.auth import TOKEN_MODES
from flowport.runtime.autoscale import ScaleSettings
from flowport.runtime.base import (
    DeploymentFailed,
    DeploymentKey,
    DeploymentPlan,
    InstanceConfig,
    Probe,
)
from flowport.scrub import SCRUBBED, SECRET_NAME
from flowport.store import Documents
from flowport.tracing.setup import CONTENT_ENV as TRACE_CONTENT_ENV


def new_key() -> str:
    return secrets.token_urlsafe(32)


def new_incarnation() -> str:
    """The id of one life of an endpoint: its tokens name it, a re-created endpoint gets another."""
    return secrets.token_urlsafe(16)


class ControlPlane:
    def __init__(
        self,
        *,
        endpoints: Documents,
        computes: Computes,
        deployments: Documents,
        operations: Operations,
        models: ModelRegistry,
        environments: EnvironmentRegistry,
        connections: ConnectionService,
        cipher: Cipher,
        tokens: TokenSigner,
        dataplane: DataPlaneClient,
        base_url: str,
    ) -> None:
        self.endpoints = endpoints
        self.computes = computes
        self.deployments = deployments
        self.operations = operations
        self.models = models
        self.environments = environments
        self.connections = connections
        self.cipher = cipher
        self.tokens = tokens
        self.dataplane = dataplane
        """The gateway's routes and the runtime's deployments, in the data plane process."""
        self.recovering = True
        """Until ``recover`` has run, changes wait (503): they would race with it."""
        self.base_url = base_url.rstrip("/")

    # -- endpoints --------------------------------------------------------------------------

    def _endpoint_row(self, name: str) -> dict[str, Any]:
        row = self.endpoints.get(name=name)
        if row is None:
            raise ApiError(
                404, "EndpointNotFound", f"endpoint {name!r} does not exist (flowport online-endpoint list)"
            )
        return row

    def show_endpoint(self, name: str) -> dict[str, Any]:
        return self._endpoint_view(self._endpoint_row(name))

    async def compare(self, name: str, deployments: list[str]) -> dict[str, Any]:
        """Two deployments' answers to the same mirrored requests, as the gateway recorded them."""
        self._endpoint_row(name)
        if len(deployments) != 2 or deployments[0] == deployments[1]:
            raise ApiError(
                400,
                "InvalidDeployments",
                f"compare takes two different deployments, got {deployments}; "
                "give them as --deployments blue green",
            )
        known = {row["name"] for row in self.deployments.list(endpoint=name)}
        unknown = [d for d in deployments if d not in known]
        if unknown:
            raise ApiError(
                404,
                "DeploymentNotFound",
                f"endpoint {name!r} has no deployment {unknown[0]!r}; its deployments: "
                f"{', '.join(sorted(known)) or 'none'}",
            )
        return await self.dataplane.compare(name, deployments[0], deployments[1])

    def list_endpoints(self) -> list[dict[str, Any]]:
        return [self._endpoint_view(row) for row in self.endpoints.list()]

    def _endpoint_view(self, row: Mapping[str, Any]) -> dict[str, Any]:
        name = row["name"]
        view = {
            "name": name,
            "auth_mode": row["auth_mode"],
            "description": row.get("description", ""),
            "tags": row.get("tags", {}),
            "traffic": row.get("traffic", {}),
            "mirror_traffic": row.get("mirror_traffic", {}),
            "provisioning_state": row.get("provisioning_state", "Succeeded"),
            "scoring_uri": f"{self.base_url}/endpoints/{name}/score",
            "openapi_uri": f"{self.base_url}/endpoints/{name}/swagger.json",
            "kind": "Managed",
            "created_at": row["created_at"],
            "updated_at": row["updated_at"],
            **row.get("extras", {}),
        }
        if row.get("compute"):
            view["compute"] = f"azureml:{row['compute']}"
            view["kind"] = "K8S" if self.computes.target(row["compute"]).type == "kubernetes" else "Managed"
        if row.get("notes"):
            view["notes"] = row["notes"]
        return view

    def _save_endpoint(self, document: dict[str, Any], keys: dict[str, str] | None = None) -> None:
        columns = {"secrets": self.cipher.encrypt(json.dumps(keys))} if keys is not None else {}
        fields = {
            k: v for k, v in document.items() if k not in ("name", "secrets", "created_at", "updated_at")
        }
        self.endpoints.put({"name": document["name"]}, fields, **columns)

    def _keys(self, row: Mapping[str, Any]) -> dict[str, str]:
        return json.loads(self.cipher.decrypt(row["secrets"]))

    async def create_endpoint(self, spec: EndpointSpec) -> dict[str, Any]:
        if self.endpoints.get(name=spec.name) is not None:
            raise ApiError(
                409,
                "EndpointExists",
                f"endpoint {spec.name!r} already exists; change it with flowport online-endpoint update",
            )
        traffic, mirror = spec.traffic or {}, spec.mirror_traffic or {}
        self._check_traffic(spec.name, traffic, mirror, deployments=set())
        if spec.compute:
            self.computes.check_reference(spec.compute)
        operation = self.operations.claim(spec.name, "CreateEndpoint", spec.name)
        document = {
            "name": spec.name,
            "auth_mode": spec.auth_mode,
            "description": spec.description,
            "tags": spec.tags,
            "traffic": traffic,
            "mirror_traffic": mirror,
            "extras": spec.extras,
            "notes": list(spec.notes),
            "provisioning_state": "Succeeded",
            "incarnation": new_incarnation(),
        }
        if spec.compute and spec.compute != "local":
            document["compute"] = spec.compute

        async def work() -> None:
            self._save_endpoint(document, {"primary": new_key(), "secondary": new_key()})
            await self.publish(spec.name)

        return await self.operations.run_now(operation, work)

    async def update_endpoint(self, spec: EndpointSpec, fields: set[str]) -> dict[str, Any]:
        """Change the fields given (``fields``: the keys present in the request)."""
        row = self._endpoint_row(spec.name)
        if "compute" in fields and (spec.compute or "local") != (row.get("compute") or "local"):
            raise ApiError(
                400,
                "ComputeImmutable",
                f"compute: endpoint {spec.name!r} runs on {row.get('compute') or 'local'}; a compute "
                "cannot change (as on Azure): create a new endpoint on the other compute",
            )
        document = dict(row)
        for key in ("auth_mode", "description", "tags"):
            if key in fields:
                document[key] = getattr(spec, key)
        if spec.traffic is not None:
            document["traffic"] = spec.traffic
        if spec.mirror_traffic is not None:
            document["mirror_traffic"] = spec.mirror_traffic
        if spec.extras:
            document["extras"] = {**row.get("extras", {}), **spec.extras}
        document["notes"] = list(spec.notes)
        self._check_traffic(spec.name, document["traffic"], document["mirror_traffic"])
        operation = self.operations.claim(spec.name, "UpdateEndpoint", spec.name)

        async def work() -> None:
            self._save_endpoint(document)
            await self.publish(spec.name)

        return await self.operations.run_now(operation, work)

    async def set_traffic(
        self, name: str, traffic: dict[str, int] | None, mirror: dict[str, int] | None
    ) -> dict[str, Any]:
        row = self._endpoint_row(name)
        spec = EndpointSpec(name=name, auth_mode=row["auth_mode"], traffic=traffic, mirror_traffic=mirror)
        return await self.update_endpoint(spec, set())

    def _check_traffic(
        self,
        endpoint: str,
        traffic: Mapping[str, int],
        mirror: Mapping[str, int],
        deployments: set[str] | None = None,
    ) -> None:
        if deployments is None:
            deployments = {d["name"] for d in self.deployments.list(endpoint=endpoint)}
        problems = []
        unknown = sorted(set(traffic) - deployments) + sorted(set(mirror) - deployments)
        if unknown:
            known = ", ".join(sorted(deployments)) or "none yet"
            problems.append(
                f"traffic names deployments that do not exist: {', '.join(unknown)} (it has {known})"
            )
        total = sum(traffic.values())
        if total not in (0, 100):
            problems.append(f"traffic percentages must add up to 0 or 100, they add up to {total}")
        mirror_errors: list[str] = []
        check_mirror_shape(mirror, lambda path, message: mirror_errors.append(f"{path}: {message}"))
        problems += mirror_errors
        both = sorted(name for name, value in mirror.items() if value and traffic.get(name))
        if both:
            problems.append(
                f"mirror_traffic: {', '.join(both)} already receives live traffic and cannot be mirrored to"
            )
        if problems:
            raise ApiError(400, "InvalidTraffic", "; ".join(problems))

    async def delete_endpoint(self, name: str) -> dict[str, Any]:
        self._endpoint_row(name)
        operation = self.operations.claim(name, "DeleteEndpoint", name)
        row = self._endpoint_row(name)
        self._save_endpoint({**row, "provisioning_state": "Deleting"})

        self.operations.start(operation, lambda: self._finish_endpoint_delete(name))
        return operation

    async def _finish_endpoint_delete(self, name: str) -> None:
        for deployment in self.deployments.list(endpoint=name):
            await self.dataplane.remove(DeploymentKey(name, deployment["name"]))
            self.deployments.delete(endpoint=name, name=deployment["name"])
        self.endpoints.delete(name=name)
        await self.dataplane.withdraw(name)

    def credentials(self, name: str) -> dict[str, Any]:
        row = self._endpoint_row(name)
        if row["auth_mode"] in TOKEN_MODES:
            return self.tokens.issue(name, self._incarnation(row)).as_credentials()
        keys = self._keys(row)
        return {"primaryKey": keys["primary"], "secondaryKey": keys["secondary"]}

    async def regenerate_key(self, name: str, key_type: str, key_value: str | None = None) -> dict[str, Any]:
        row = self._endpoint_row(name)
        if row["auth_mode"] != "key":
            raise ApiError(
                400, "NotKeyAuth", f"endpoint {name!r} uses {row['auth_mode']}; only key endpoints have keys"
            )
        if key_type not in ("primary", "secondary"):
            raise ApiError(400, "InvalidKeyType", f"key type must be primary or secondary, got {key_type!r}")
        if key_value is not None and len(key_value) < 16:
            raise ApiError(400, "InvalidKey", "a key must be at least 16 characters long")
        keys = self._keys(row)
        keys[key_type] = key_value or new_key()
        self._save_endpoint(row, keys)
        await self.publish(name)
        return {"regenerated": key_type}

    # -- deployments ------------------------------------------------------------------------

    def _deployment_row(self, endpoint: str, name: str) -> dict[str, Any]:
        self._endpoint_row(endpoint)
        row = self.deployments.get(endpoint=endpoint, name=name)
        if row is None:
            raise ApiError(
                404,
                "DeploymentNotFound",
                f"deployment {name!r} does not exist on endpoint {endpoint!r} "
                f"(flowport online-deployment list -e {endpoint})",
            )
        return row

    async def show_deployment(self, endpoint: str, name: str) -> dict[str, Any]:
        return await self._deployment_view(self._deployment_row(endpoint, name))

    async def list_deployments(self, endpoint: str) -> list[dict[str, Any]]:
        self._endpoint_row(endpoint)
        rows = self.deployments.list(endpoint=endpoint)
        return list(await asyncio.gather(*(self._deployment_view(row) for row in rows)))

    async def _deployment_view(self, row: Mapping[str, Any]) -> dict[str, Any]:
        spec = row["spec"]
        key = DeploymentKey(row["endpoint"], row["name"])
        variables = self._variables(spec)
        instances, status = await asyncio.gather(self.dataplane.instances(key), self.dataplane.scaling(key))
        view = {
            "name": row["name"],
            "endpoint_name": row["endpoint"],
            "model": spec["model"],
            "description": spec.get("description", ""),
            "tags": spec.get("tags", {}),
            "instance_type": spec.get("instance_type"),
            "instance_count": spec["instance_count"],
            "environment_variables": {
                k: SCRUBBED if k in _secret_names(spec, variables) else v for k, v in variables.items()
            },
            **_marked(spec),
            "request_settings": spec["request_settings"],
            "liveness_probe": spec["liveness_probe"],
            "readiness_probe": spec["readiness_probe"],
            "provisioning_state": row.get("provisioning_state", "Succeeded"),
            "instances": [
                {"id": i.id, "ready": i.ready, "pid": i.pid, "restarts": i.restarts}
                | ({"node": i.node} if i.node else {})
                for i in instances
            ],
            "created_at": row["created_at"],
            "updated_at": row["updated_at"],
            **spec.get("extras", {}),
        }
        if spec.get("data_collector") is not None:
            view["data_collector"] = spec["data_collector"]
        if status is not None:
            view["scaling"] = scaling.view(status)
            scaling.record(self.operations, row["endpoint"], row["name"], status)
        if row.get("error"):
            view["error"] = row["error"]
        if row.get("notes"):
            view["notes"] = row["notes"]
        return view

    async def collect_scaling(self, endpoint: str) -> None:
        """Record the scaling events the data plane kept for ``endpoint``'s autoscaled deployments."""
        for row in self.deployments.list(endpoint=endpoint):
            if _scale(row["spec"]) is not None:
                status = await self.dataplane.scaling(DeploymentKey(endpoint, row["name"]))
                if status is not None:
                    scaling.record(self.operations, endpoint, row["name"], status)

    def deployment_document(self, endpoint: str, name: str) -> dict[str, Any]:
        """The deployment as Azure YAML fields (secrets in clear): the base ``update --set`` edits."""
        spec = self._deployment_row(endpoint, name)["spec"]
        document = {
            "name": name,
            "endpoint_name": endpoint,
            "model": spec["model"],
            "description": spec.get("description", ""),
            "tags": spec.get("tags", {}),
            "instance_count": spec["instance_count"],
            "environment_variables": self._variables(spec),
            **_marked(spec),
            "request_settings": spec["request_settings"],
            "liveness_probe": spec["liveness_probe"],
            "readiness_probe": spec["readiness_probe"],
            **spec.get("extras", {}),
        }
        if spec.get("instance_type"):
            document["instance_type"] = spec["instance_type"]
        if document["model"] is None:  # a scoring script without a model
            del document["model"]
        collector = spec.get("data_collector")
        if collector:
            document["data_collector"] = {
                "sampling_rate": collector["sampling_rate"],
                "rolling_rate": collector["rolling_rate"],
                "collections": {k: {"enabled": collector[k]} for k in ("request", "response")},
            }
        return document

    def export(self, name: str, deployment: str | None = None) -> dict[str, Any]:
        """Everything an artifact builder needs, as plain data: keys and secrets in clear.

        The endpoint (keys, traffic, mirror) and its deployments (or the one named), each as its
        Azure YAML fields plus the names of its secret variables and the connections its flow uses
        (each as its YAML mapping).
        """
        row = self._endpoint_row(name)
        keys = self._keys(row) if row["auth_mode"] == "key" else {}
        rows = (
            [self._deployment_row(name, deployment)] if deployment else self.deployments.list(endpoint=name)
        )
        return {
            "endpoint": {
                "name": name,
                "auth_mode": row["auth_mode"],
                "traffic": dict(row.get("traffic", {})),
                "mirror_traffic": dict(row.get("mirror_traffic", {})),
                "keys": keys,
                **self._compute_namespace(row),
            },
            "deployments": [self._export_deployment(name, r) for r in rows],
        }

    def _compute_namespace(self, row: Mapping[str, Any]) -> dict[str, str]:
        """A kubernetes compute's namespace: where the export goes unless ``--namespace`` says."""
        if not row.get("compute"):
            return {}
        namespace = self.computes.get(row["compute"]).get("namespace")
        return {"namespace": namespace} if namespace else {}

    def _export_deployment(self, endpoint: str, row: Mapping[str, Any]) -> dict[str, Any]:
        spec = row["spec"]
        if spec.get("scoring_script"):  # the exported image holds a flow; nothing would run the script
            raise ApiError(
                400,
                "ExportNotSupported",
                f"deployment {row['name']!r} runs a scoring script; export builds flow deployments only "
                "(export each of those with flowport online-deployment export --name NAME)",
            )
        plan = self._plan(endpoint, row["name"], spec)
        document = self.deployment_document(endpoint, row["name"])
        # ``${{azureml://connections/...}}`` resolved, as the local instances get them (an image has no
        # store to resolve them from); a connection's credential is a secret whatever its name
        variables, _ = self._resolved_variables(spec)
        credentials = {
            name
            for name, value in document["environment_variables"].items()
            if (reference := parse_connection_reference(str(value)))
            and (reference.part or "").startswith("credentials/")
        }
        return {
            **document,
            "environment_variables": variables,
            "secret_environment_variables": sorted(_secret_names(spec, variables) | credentials),
            # as connection YAML (secrets in clear): what the image reads from its mounted folder
            "connections": {
                conn.name: conn.to_dict(show_secrets=True)
                for conn in StaticConnections.from_rows(plan.config.connections).list()
            },
        }

    def _variables(self, spec: Mapping[str, Any]) -> dict[str, str]:
        sealed = spec.get("environment_variables_sealed")
        return json.loads(self.cipher.decrypt(sealed)) if sealed else {}

    def _resolve_model(self, spec: DeploymentSpec) -> dict[str, Any] | None:
        """The deployment's model, registered first when inline; None for a script without one.

        With a scoring script the model is files for ``init()`` to read, whatever they hold
        (a flow folder too): snapshotted as they are, never loaded as a flow.
        """
        if spec.model_path is not None:
            anonymous = ModelSpec(
                name=f"{spec.endpoint_name}-{spec.name}-model",
                version=None,
                path=spec.model_path,
                properties=spec.model_properties,
                description=f"registered for deployment {spec.name} of endpoint {spec.endpoint_name}",
            )
            if spec.scoring_script:
                return self.models.register_files(anonymous)
            return self.models.register(anonymous)
        if spec.model_ref is None:
            return None
        name, _, version = spec.model_ref.partition(":")
        return self.models.get(name, version or None)

    def _prepare(self, spec: DeploymentSpec) -> dict[str, Any]:
        """Snapshot what the deployment runs (model, code) and read its conda file: the stored spec."""
        model = self._resolve_model(spec)
        stored = self._stored_spec(spec, model)
        if spec.scoring_script:
            assert spec.code_path is not None
            home = self.models.models_dir.parent
            code = snapshot_files(spec.code_path, home / "code", home)
            if not (code / spec.scoring_script).is_file():
                raise ApiError(
                    400,
                    "ScoringScriptNotFound",
                    f"code_configuration.scoring_script: {spec.scoring_script!r} is not in {spec.code_path}",
                )
            stored["code_path"] = str(code)
            stored["scoring_script"] = spec.scoring_script
            stored["flow_name"] = spec.code_path.name
            stored["model_dir"] = str(self.models.model_dir(model)) if model is not None else None
            # as given, but absolute: ``update --set`` reads the document again from elsewhere
            stored["extras"]["code_configuration"] = {
                "code": str(spec.code_path),
                "scoring_script": spec.scoring_script,
            }
        elif model is not None and model.get("layout") == "files":
            raise ApiError(
                400,
                "ModelIsNotAFlow",
                f"model {model['id']} holds files, not a flow (no flow.dag.yaml, flow.flex.yaml or "
                ".prompty at its top); give code_configuration (code, scoring_script) to serve it "
                "with a scoring script",
            )
        pip, notes = self._environment_requirements(spec, stored)
        if pip:
            stored["pip_requirements"] = pip
        if notes:
            stored["environment_notes"] = notes
        return stored

    def _environment_requirements(
        self, spec: DeploymentSpec, stored: dict[str, Any]
    ) -> tuple[list[str], list[str]]:
        """The pip lines a local process takes from the deployment's environment, and the notes
        on what it leaves out: a registered environment's, or the inline conda file's and build's."""
        environment = stored["extras"].get("environment")
        if spec.environment_ref is not None:
            name, _, version = spec.environment_ref.partition(":")
            found = self.environments.find(name, version or None)
            if found is None:
                what = f"{name}:{version}" if version else f"{name}@latest"
                message = (
                    f"environment: azureml:{what} does not exist; register it with flowport environment "
                    "create --file ENV.yml, or see flowport environment list"
                )
                where = f"{spec.environment_where}: " if spec.environment_where else ""
                raise ApiError(404, "EnvironmentNotFound", where + message)
            stored["environment"] = found["id"]
            return list(found.get("pip_requirements") or ()), []
        pip: list[str] = []
        notes: list[str] = []
        if spec.conda_inline is not None:
            pip += conda_environment(None, spec.conda_inline, "environment.conda_file", spec.base_dir).pip
        if spec.conda_file is not None:
            pip += conda_environment(spec.conda_file, None, str(spec.conda_file)).pip
            if isinstance(environment, dict):
                environment = stored["extras"]["environment"] = {
                    **environment,
                    "conda_file": str(spec.conda_file),
                }
        if spec.build_path is not None:
            home = self.models.models_dir.parent
            if not spec.build_path.is_dir():
                raise ApiError(
                    400, "BuildPathNotFound", f"environment.build.path: {spec.build_path} is not a folder"
                )
            snapshot = snapshot_files(spec.build_path, home / "environments", home)
            local = read_dockerfile(snapshot, spec.dockerfile_path)
            pip += local.pip
            notes += local.notes
            if isinstance(environment, dict):  # absolute, as code_configuration's: read again elsewhere
                build = {"path": str(spec.build_path), "dockerfile_path": spec.dockerfile_path}
                stored["extras"]["environment"] = {**environment, "build": build}
        return pip, notes

    def _stored_spec(self, spec: DeploymentSpec, model: Mapping[str, Any] | None) -> dict[str, Any]:
        collector = spec.data_collector
        return {
            "model": model["id"] if model is not None else None,
            "model_path": model["path"] if model is not None else None,
            "flow_name": flow_folder_name(model.get("source_path") or model["path"]) if model else "",
            "description": spec.description,
            "tags": spec.tags,
            "instance_type": spec.instance_type,
            "instance_count": spec.instance_count,
            "environment_variables_sealed": self.cipher.encrypt(json.dumps(spec.environment_variables)),
            "secret_environment_variables": list(spec.secret_environment_variables),
            "request_settings": {
                "request_timeout_ms": spec.request_timeout_ms,
                "max_concurrent_requests_per_instance": spec.max_concurrent_requests_per_instance,
            },
            "liveness_probe": spec.liveness_probe.__dict__,
            "readiness_probe": spec.readiness_probe.__dict__,
            "data_collector": collector.__dict__ if collector else None,
            "extras": dict(spec.extras),
        }

    async def create_deployment(self, spec: DeploymentSpec, all_traffic: bool = False) -> dict[str, Any]:
        endpoint = spec.endpoint_name or ""
        self._endpoint_row(endpoint)
        if self.deployments.get(endpoint=endpoint, name=spec.name) is not None:
            raise ApiError(
                409,
                "DeploymentExists",
                f"deployment {spec.name!r} already exists on endpoint {endpoint!r}; "
                "change it with flowport online-deployment update",
            )
        if len(self.deployments.list(endpoint=endpoint)) >= 20:
            raise ApiError(400, "TooManyDeployments", f"endpoint {endpoint!r} already has 20 deployments")
        return await self._roll_out(spec, "CreateDeployment", "Creating", None, all_traffic)

    async def update_deployment(self, spec: DeploymentSpec, all_traffic: bool = False) -> dict[str, Any]:
        previous = self._deployment_row(spec.endpoint_name or "", spec.name)
        return await self._roll_out(spec, "UpdateDeployment", "Updating", _document(previous), all_traffic)

    async def _roll_out(
        self, spec: DeploymentSpec, kind: str, state: str, previous: dict[str, Any] | None, all_traffic: bool
    ) -> dict[str, Any]:
        """Record the change, then apply it in the background as an operation.

        While it runs the deployment shows ``state``; on failure it keeps ``previous`` (the
        last spec that worked, or the new one for a deployment that never ran) as ``Failed``.
        """
        endpoint = spec.endpoint_name or ""
        self.operations.ensure_free(endpoint)
        # Snapshotting and checking a model reads files and runs a child: off the loop.
        stored = await asyncio.to_thread(self._prepare, spec)
        plan = self._plan(endpoint, spec.name, stored)
        operation = self.operations.claim(endpoint, kind, spec.name)
        key = {"endpoint": endpoint, "name": spec.name}
        notes = list(stored.pop("environment_notes", ()))
        row = {"spec": stored, "provisioning_state": state, "notes": [*spec.notes, *notes]}
        row["notes"] += self.compute_notes(endpoint, spec.name)
        kept = previous if previous is not None else row
        self.deployments.put(key, {**kept, "provisioning_state": state})

        async def work() -> None:
            try:
                if plan.compute.type != "kubernetes":  # a cluster admin applies its manifests
                    await self.dataplane.apply(plan)
            except DeploymentFailed as exc:
                self._fail_deployment(endpoint, spec.name, kept, exc)
                raise ApiError(424, "DeploymentFailed", str(exc)) from None
            except DataPlaneFailed as exc:  # (a server stopping meanwhile is settled by recovery)
                self._fail_deployment(endpoint, spec.name, kept, DeploymentFailed(str(exc)))
                raise
            self.deployments.put(key, {**row, "provisioning_state": "Succeeded"})
            if all_traffic:
                self._save_endpoint({**self._endpoint_row(endpoint), "traffic": {spec.name: 100}})
            await self.publish(endpoint)

        self.operations.start(operation, work)
        return {**operation, "environment_notes": notes} if notes else operation

    def compute_notes(self, endpoint: str, name: str) -> list[str]:
        """What a deployment's compute means for it (a kubernetes one is exported, not run)."""
        compute = self.computes.target(self._endpoint_row(endpoint).get("compute"))
        return [exported_note(endpoint, name, compute.name)] if compute.type == "kubernetes" else []

    def _fail_deployment(self, endpoint: str, name: str, row: dict[str, Any], exc: DeploymentFailed) -> None:
        error = {"reason": exc.reason, "log_tail": exc.log_tail}
        self.deployments.put(
            {"endpoint": endpoint, "name": name}, {**row, "provisioning_state": "Failed", "error": error}
        )

    async def delete_deployment(self, endpoint: str, name: str) -> dict[str, Any]:
        row = self._deployment_row(endpoint, name)
        endpoint_row = self._endpoint_row(endpoint)
        if endpoint_row["traffic"].get(name) or endpoint_row["mirror_traffic"].get(name):
            raise ApiError(
                409,
                "DeploymentHasTraffic",
                f"deployment {name!r} receives traffic; set its traffic to 0 first "
                f'(flowport online-endpoint update -n {endpoint} --traffic "{name}=0 ...")',
            )
        operation = self.operations.claim(endpoint, "DeleteDeployment", name)
        self.deployments.put(
            {"endpoint": endpoint, "name": name}, {**_document(row), "provisioning_state": "Deleting"}
        )

        async def work() -> None:
            await self.dataplane.remove(DeploymentKey(endpoint, name))
            self.deployments.delete(endpoint=endpoint, name=name)
            await self.publish(endpoint)

        self.operations.start(operation, work)
        return operation

    async def ready_addresses(self, endpoint: str, name: str) -> list[str]:
        self._deployment_row(endpoint, name)
        return [i.address for i in await self.dataplane.instances(DeploymentKey(endpoint, name)) if i.ready]

    async def logs(self, endpoint: str, name: str, lines: int) -> list[str]:
        self._deployment_row(endpoint, name)
        return await self.dataplane.logs(DeploymentKey(endpoint, name), lines)

    # -- plans and routes -------------------------------------------------------------------

    def _plan(self, endpoint: str, name: str, stored: Mapping[str, Any]) -> DeploymentPlan:
        variables, referenced = self._resolved_variables(stored)
        collector = stored.get("data_collector") or {}
        if collector.get("request") or collector.get("response"):  # data capture allowed: traces keep content
            variables = {TRACE_CONTENT_ENV: "true", **variables}
        settings = stored["request_settings"]
        requirements: Path | None = None
        if stored.get("scoring_script"):  # the script runs; the model (if any) is its files
            source = Path(stored["code_path"])
            # the script reads resolved references from its variables; handed over to be masked
            connections = self.connections.handover(referenced)
        else:
            source = Path(stored["model_path"])
            try:
                flow = load_flow(source)
            except FlowError as exc:
                raise ApiError(400, "InvalidFlow", str(exc), problems=exc.problems) from None
            connections = self._connections_for(flow, variables, referenced)
            requirements = _requirements(flow)
        config = InstanceConfig(
            source=str(source),
            environment_variables=variables,
            connections=connections,
            max_concurrent_requests=settings["max_concurrent_requests_per_instance"],
            request_timeout_ms=settings["request_timeout_ms"],
            name=stored.get("flow_name") or "",
            secret_variables=tuple(sorted(_secret_names(stored, variables))),
            scoring_script=stored.get("scoring_script") or "",
            model_dir=stored.get("model_dir") or "",
        )
        liveness, readiness = Probe(**stored["liveness_probe"]), Probe(**stored["readiness_probe"])
        pip = tuple(stored.get("pip_requirements") or ())
        fingerprint = json.dumps(
            [config.to_json(), liveness.__dict__, readiness.__dict__, str(requirements), list(pip)],
            sort_keys=True,
        )
        return DeploymentPlan(
            key=DeploymentKey(endpoint, name),
            revision=hashlib.sha256(fingerprint.encode()).hexdigest()[:16],
            instance_count=stored["instance_count"],
            config=config,
            liveness=liveness,
            readiness=readiness,
            requirements=requirements,
            pip_requirements=pip,
            masked=_secret_values(stored, variables, connections),
            scale=_scale(stored),
            compute=self.computes.target(self._endpoint_row(endpoint).get("compute")),
        )

    def _resolved_variables(self, stored: Mapping[str, Any]) -> tuple[dict[str, str], set[str]]:
        """The variables with ``${{azureml://connections/...}}`` resolved, and the connections named.

        A missing connection is a 400 naming the variable (``show`` of a deployment restarted
        without it says the same line).
        """
        try:
            return resolve_connection_references(self._variables(stored), self.connections)
        except ConnectionSpecError as exc:
            raise ApiError(400, "ConnectionNotFound", str(exc)) from None

    def _connections_for(
        self, flow: FlowDef, variables: Mapping[str, str], referenced: set[str]
    ) -> dict[str, dict[str, Any]]:
        """The stored connections the flow may use: named by a node, a literal input, or a variable."""
        names = flow.connection_candidates() | set(variables.values()) | referenced
        names |= _init_config_names(variables)
        handed = self.connections.handover(names)
        for used in sorted({node.connection for node in flow.nodes.values() if node.connection}):
            swap = (variables.get(used) or "").strip()
            if swap and not swap.startswith("{") and swap not in handed:
                raise ApiError(
                    400,
                    "ConnectionNotFound",
                    f"environment_variables.{used}: connection {swap!r} does not exist; create it "
                    "(flowport connection create --file ...) or name another one",
                )
        return handed

    def _incarnation(self, row: dict[str, Any]) -> str:
        """The endpoint's incarnation; one stored now for an endpoint created before they existed."""
        if not row.get("incarnation"):
            row["incarnation"] = new_incarnation()
            self._save_endpoint(row)
        return row["incarnation"]

    def route(self, name: str) -> EndpointRoute:
        row = self._endpoint_row(name)
        incarnation = self._incarnation(row)
        keys = self._keys(row)
        deployments = {}
        for deployment in self.deployments.list(endpoint=name):
            spec = deployment["spec"]
            collector = spec.get("data_collector")
            deployments[deployment["name"]] = DeploymentRoute(
                name=deployment["name"],
                max_concurrent_requests_per_instance=spec["request_settings"][
                    "max_concurrent_requests_per_instance"
                ],
                instance_count=auto.max_instances if (auto := _scale(spec)) else spec["instance_count"],
                request_timeout_ms=spec["request_settings"]["request_timeout_ms"],
                data_collection=DataCollection(**collector) if collector else None,
            )
        return EndpointRoute(
            name=name,
            auth_mode=row["auth_mode"],
            key_digests=(key_digest(keys["primary"]), key_digest(keys["secondary"])),
            traffic=dict(row["traffic"]),
            mirror_traffic=dict(row["mirror_traffic"]),
            deployments=deployments,
            incarnation=incarnation,
        )

    async def publish(self, name: str) -> None:
        await self.dataplane.publish(self.route(name))

    async def recover(self) -> None:
        """On every start: settle what a crash left half done, then make the data plane match the store.

        An operation still ``Running`` died with the last control plane: it is marked failed. A
        deletion is carried out; a deployment caught ``Creating`` is applied (``Succeeded`` or
        ``Failed``); one caught ``Updating`` keeps running its previous spec and says ``Failed``
        with why. Routes and deployments the data plane runs that the store no longer has are
        removed. After a control-plane restart the data plane still runs everything, so applying
        an unchanged plan changes nothing and scoring never stops.
        """
        try:
            await self._recover()
        finally:
            self.recovering = False

    async def _recover(self) -> None:
        for operation in self.operations.rows.list():
            if operation["status"] == "Running":
                error = {"code": "ServerRestarted", "message": "the server stopped while this operation ran"}
                self.operations.finish(operation, "Failed", error)
        for endpoint in self.endpoints.list():
            if endpoint.get("provisioning_state") == "Deleting":
                await self._finish_endpoint_delete(endpoint["name"])
        rows = []
        for row in self.deployments.list():
            if row.get("provisioning_state") == "Deleting":
                await self.dataplane.remove(DeploymentKey(row["endpoint"], row["name"]))
                self.deployments.delete(endpoint=row["endpoint"], name=row["name"])
            else:
                rows.append(row)
        names = {endpoint["name"] for endpoint in self.endpoints.list()}
        for name in names:
            await self.publish(name)
        for name in set(await self.dataplane.routes()) - names:
            await self.dataplane.withdraw(name)
        wanted = {DeploymentKey(row["endpoint"], row["name"]) for row in rows}
        for key in set(await self.dataplane.deployments()) - wanted:
            await self.dataplane.remove(key)
        await asyncio.gather(*(self._restart(row) for row in rows))

    async def _restart(self, row: dict[str, Any]) -> None:
        endpoint, name, state = row["endpoint"], row["name"], row.get("provisioning_state")
        try:
            plan = self._plan(endpoint, name, row["spec"])
            if plan.compute.type != "kubernetes":
                await self.dataplane.apply(plan)
        except (DeploymentFailed, ApiError, DataPlaneFailed) as exc:
            failed = exc if isinstance(exc, DeploymentFailed) else DeploymentFailed(str(exc))
            self._fail_deployment(endpoint, name, _document(row), failed)
            return
        if state == "Creating":
            self.deployments.put(
                {"endpoint": endpoint, "name": name}, {**_document(row), "provisioning_state": "Succeeded"}
            )
        elif state == "Updating":
            interrupted = DeploymentFailed(
                "the server stopped during this update; the deployment runs its previous spec; "
                f"run the update again (flowport online-deployment update -e {endpoint} -n {name} ...)"
            )
            self._fail_deployment(endpoint, name, _document(row), interrupted)


def exported_note(endpoint: str, name: str, compute: str) -> str:
    return (
        f"compute: {compute} is a kubernetes compute: flowport does not start instances on it; "
        f"export the manifests with flowport online-endpoint export -n {endpoint} --format kubernetes "
        f"--output DIR (or online-deployment export -e {endpoint} -n {name} ...) and kubectl apply them"
    )


def _scale(spec: Mapping[str, Any]) -> ScaleSettings | None:
    """The autoscaling of a stored spec (``scale_settings: type: target_utilization``), or None."""
    return ScaleSettings.from_scale_settings(spec.get("extras", {}).get("scale_settings"))


def _document(row: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k not in ("endpoint", "name", "created_at", "updated_at")}


def _secret_names(spec: Mapping[str, Any], variables: Mapping[str, str]) -> set[str]:
    """Variables whose values are never shown: marked in ``secret_environment_variables`` or named so."""
    marked = set(spec.get("secret_environment_variables") or ())
    return {name for name in variables if name in marked or SECRET_NAME.search(name)}


def _marked(spec: Mapping[str, Any]) -> dict[str, list[str]]:
    names = spec.get("secret_environment_variables")
    return {"secret_environment_variables": list(names)} if names else {}


def _secret_values(
    spec: Mapping[str, Any], variables: Mapping[str, str], connections: Mapping[str, Mapping[str, Any]]
) -> frozenset[str]:
    """What the runtime masks in the instance logs it shows: secret variables, connection secrets."""
    values = {variables[name] for name in _secret_names(spec, variables)}
    for connection in connections.values():
        values.update(v for v in (connection.get("secrets") or {}).values() if isinstance(v, str))
    return frozenset(values)


def _init_config_names(variables: Mapping[str, str]) -> set[str]:
    """Strings in PROMPTFLOW_FLOW_INIT_CONFIG (a flex class's init): any may name a connection."""
    try:
        config = json.loads(variables.get("PROMPTFLOW_FLOW_INIT_CONFIG") or "{}")
    except ValueError:
        return set()
    return {v for v in config.values() if isinstance(v, str)} if isinstance(config, dict) else set()


def _requirements(flow: FlowDef) -> Path | None:
    declared = (flow.environment or {}).get("python_requirements_txt")
    candidate = flow.path / (declared or "requirements.txt")
    return candidate if candidate.is_file() else None
