"""The ``flowport`` command."""

from __future__ import annotations

import typer

from flowport.cli import connection_cmds, dev_cmds, flow_cmds, run_cmds

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


def main() -> None:
    app()


if __name__ == "__main__":
    main()
