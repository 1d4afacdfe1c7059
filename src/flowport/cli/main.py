"""The ``flowport`` command."""

from __future__ import annotations

import typer

from flowport.cli import (
    compute_cmds,
    connection_cmds,
    deployment_cmds,
    dev_cmds,
    endpoint_cmds,
    environment_cmds,
    flow_cmds,
    gateway_cmd,
    model_cmds,
    run_cmds,
    server_cmd,
    trace_cmds,
)
from flowport.settings import keep_private

app = typer.Typer(
    name="flowport",
    help="Run prompt flows locally and as online endpoints.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(flow_cmds.app, name="flow")
app.add_typer(connection_cmds.app, name="connection")
app.add_typer(run_cmds.app, name="run")
app.add_typer(dev_cmds.app, name="dev")
app.add_typer(model_cmds.app, name="model")
app.add_typer(environment_cmds.app, name="environment")
app.add_typer(endpoint_cmds.app, name="online-endpoint")
app.add_typer(endpoint_cmds.app, name="endpoint", help="Alias of online-endpoint.")
app.add_typer(deployment_cmds.app, name="online-deployment")
app.add_typer(deployment_cmds.app, name="deployment", help="Alias of online-deployment.")
app.add_typer(compute_cmds.app, name="compute")
app.add_typer(trace_cmds.app, name="trace")
app.command("server")(server_cmd.server)
app.command("gateway")(gateway_cmd.gateway)


def main() -> None:
    keep_private()  # whatever it writes under FLOWPORT_HOME (runs, store, server log) stays private
    app()


if __name__ == "__main__":
    main()
