"""One serving process: ``python -m flowport.runtime.instance --uds PATH`` (or ``--port``).

Deployment instances run it, and so does ``flowport flow serve`` for a flow with connections.

The runtime writes the ``InstanceConfig`` as JSON to the process's stdin and closes it.
Connections arrive whole, secrets in clear over the pipe, so an instance never opens the
store (no database driver, no key file, less memory). With ``PROMPTFLOW_WORKER_NUM`` > 1
the config travels to the worker processes in an environment variable of this process.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flowport.connections import SCRUBBED, ConnectionResolver, ConnectionSpecError, StaticConnections
from flowport.engine import load_executor
from flowport.flow import FlowError
from flowport.instance_keys import KeyedApp
from flowport.runtime.base import IDENTITY_ENV, InstanceConfig
from flowport.runtime.local.logs import MIN_MASKED, masking
from flowport.serving import ScoringApp, ServeSettings
from flowport.serving.script_app import ScriptApp
from flowport.serving.server import run
from flowport.serving.settings import MAX_CONCURRENT_ENV, REQUEST_TIMEOUT_ENV, WORKERS_ENV
from flowport.serving.traced import TRACE_FD_ENV, trace_app
from flowport.serving.user_script import FAILED_TO_START, ScriptError, UserScript
from flowport.tracing.setup import Tracing
from flowport.tracing.spans import CONTENT_LIMIT

CONFIG_ENV = "FLOWPORT_INSTANCE_CONFIG"
PR_SET_DUMPABLE = 4


def keep_private() -> None:
    """No other process of the same user may read this one's memory or environment (Linux).

    Instances of every deployment run as one user; without this, one deployment's flow code
    could read another's connection secrets from ``/proc/<pid>/environ`` or ``/proc/<pid>/mem``.
    """
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)


def apply_environment(config: InstanceConfig) -> None:
    """The deployment's variables and request settings, as the serving settings read them."""
    os.environ.update({k: str(v) for k, v in config.environment_variables.items()})
    os.environ[MAX_CONCURRENT_ENV] = str(config.max_concurrent_requests)
    os.environ[REQUEST_TIMEOUT_ENV] = str(config.request_timeout_ms)
    if config.model_dir:
        os.environ["AZUREML_MODEL_DIR"] = config.model_dir


def create_app() -> Any:
    """The scoring app of the config in the environment, behind its access key when it has one
    (the uvicorn factory of each worker)."""
    config = InstanceConfig.from_json(json.loads(os.environ[CONFIG_ENV]))
    return guarded(scoring_app(config), config.access_key)


def guarded(app: ScoringApp | ScriptApp, access_key: str) -> Any:
    return KeyedApp(app, access_key) if access_key else app


def scoring_app(config: InstanceConfig) -> ScoringApp | ScriptApp:
    """The scoring app of ``config``: a flow's, or a scoring script's."""
    keep_private()  # again in each worker: exec made it dumpable
    os.chdir(config.source)
    settings = ServeSettings.from_env()
    if config.scoring_script:  # init() runs when the server starts (the app's lifespan)
        script = UserScript.load(Path(config.source), config.scoring_script)
        script_app = ScriptApp(script, settings, name=config.name or None)
        start_tracing(config, script_app)
        return script_app
    executor = load_executor(
        config.source,
        connections=ConnectionResolver(StaticConnections.from_rows(config.connections)),
        worker_threads=settings.worker_threads,
        environment_variables=config.environment_variables,
        process_environment_wins=True,
    )
    app = ScoringApp(executor, settings, name=config.name or None)
    start_tracing(config, app)
    return app


def start_tracing(config: InstanceConfig, app: ScoringApp | ScriptApp) -> Tracing | None:
    """Trace with the deployment's identity on every span, its secret values scrubbed."""
    secrets = {
        str(config.environment_variables[name])
        for name in config.secret_variables
        if name in config.environment_variables
    }
    for connection in config.connections.values():
        secrets.update(v for v in (connection.get("secrets") or {}).values() if isinstance(v, str))
    if config.access_key:
        secrets.add(config.access_key)
    # captured content is JSON text: a secret with a quote or a backslash is in it escaped
    secrets |= {json.dumps(value, ensure_ascii=False)[1:-1] for value in secrets}
    resource = {
        name: os.environ[variable] for name, variable in IDENTITY_ENV.items() if os.environ.get(variable)
    }
    return trace_app(app, "flowport-instance", resource, _span_scrub(secrets))


def _span_scrub(secrets: set[str]) -> Callable[[str], str]:
    """``masking(secrets)``, and for content cut at ``CONTENT_LIMIT`` (it ends ``...``) also the
    part of a secret the cut left at its end."""
    mask = masking(secrets)
    kept = sorted((s for s in secrets if len(s) > MIN_MASKED), key=len, reverse=True)

    def scrub(text: str) -> str:
        text = mask(text)
        if not kept or len(text) <= CONTENT_LIMIT or not text.endswith("..."):
            return text
        body = text[:-3]
        for secret in kept:
            cut = next(
                (n for n in range(len(secret) - 1, MIN_MASKED - 1, -1) if body.endswith(secret[:n])), 0
            )
            if cut:
                return body[:-cut] + SCRUBBED + "..."
        return text

    return scrub


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m flowport.runtime.instance")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--uds", help="Unix socket to listen on")
    where.add_argument("--port", type=int, help="port to listen on")
    parser.add_argument("--host", default="127.0.0.1", help="address for --port (default 127.0.0.1)")
    args = parser.parse_args(argv)
    config = InstanceConfig.from_json(json.loads(sys.stdin.read()))
    serve(config, host=args.host, port=args.port or 0, uds=args.uds)


def serve(config: InstanceConfig, *, host: str = "127.0.0.1", port: int = 0, uds: str | None = None) -> None:
    """Load the flow and serve it until stopped (a flow that fails to load: its problems, exit 1)."""
    apply_environment(config)
    os.environ[CONFIG_ENV] = json.dumps(config.to_json())
    workers = int(os.environ.get(WORKERS_ENV) or 1)
    try:
        app = scoring_app(config)
    except (FlowError, ConnectionSpecError) as exc:  # the log's tail shows the problem, no traceback
        print(f"the flow failed to load:\n{exc}", file=sys.stderr, flush=True)
        sys.exit(1)
    except ScriptError as exc:
        print(f"{FAILED_TO_START}{exc}", file=sys.stderr, flush=True)
        sys.exit(1)
    if isinstance(app, ScriptApp):
        message = f"instance loaded {app.script.name}; init() runs before it serves ({workers} worker(s))"
    else:
        message = f"instance ready to serve {app.name} ({workers} worker(s))"
    print(message, file=sys.stderr, flush=True)
    if workers > 1:  # a worker does not inherit the trace file's descriptor: its number is another file
        os.environ.pop(TRACE_FD_ENV, None)
    target = "flowport.runtime.instance:create_app" if workers > 1 else guarded(app, config.access_key)
    run(target, host=host, port=port, uds=uds, workers=workers)


if __name__ == "__main__":
    main()
