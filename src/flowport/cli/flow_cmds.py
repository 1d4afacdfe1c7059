"""``flowport flow``: test and validate a flow folder locally."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from pathlib import Path
from typing import Any

import typer

from flowport.cli import serve_cmd
from flowport.cli.common import (
    connection_resolver,
    enter_flow_dir,
    fail,
    guarded,
    parse_pairs,
    print_json,
    read_json_file,
)
from flowport.engine import FlowExecutor, NodeStream

app = typer.Typer(help="Test, validate and serve prompt flow folders.", no_args_is_help=True)
app.command("serve")(serve_cmd.serve)


def _show_llm_retries() -> None:
    """Print each LLM retry on stderr as it happens (node, connection, reason, attempt, wait)."""
    logger = logging.getLogger("flowport.llm")
    if not any(getattr(h, "flowport_cli", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler.flowport_cli = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


def _gather_inputs(inputs: list[str] | None, extra: list[str], inputs_file: Path | None) -> dict[str, Any]:
    values: dict[str, Any] = {}
    if inputs_file is not None:
        data = read_json_file(inputs_file)
        if not isinstance(data, dict):
            fail(f"{inputs_file} must hold a JSON object of input names to values")
        values.update(data)
    values.update(parse_pairs([*(inputs or []), *extra], "--inputs"))
    return values


async def _run(executor: FlowExecutor, values: dict[str, Any], node: str | None) -> Any:
    if node:
        return await executor.run_single_node(node, values)
    result = await executor.run_line(values, stream=True, line_number=0)
    if result.error is not None:
        raise result.error
    if executor.aggregation_nodes:
        metrics, _, error = await executor.run_aggregation([(result.inputs, result.node_outputs)])
        if error is not None:
            raise error
        sys.stderr.write(f"metrics: {json.dumps(metrics)}\n")
    outputs = {}
    for key, value in result.outputs.items():
        if isinstance(value, NodeStream):
            parts = []
            async for chunk in value:
                parts.append(chunk)
                sys.stderr.write(chunk)
                sys.stderr.flush()
            sys.stderr.write("\n")
            value = "".join(parts)
        outputs[key] = value
    return outputs


@app.command("test", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@guarded
def test(
    ctx: typer.Context,
    flow: Path = typer.Option(..., "--flow", help="The flow folder (or its flow.dag.yaml)."),
    inputs: list[str] | None = typer.Option(None, "--inputs", help="Inputs as key=value (repeatable)."),
    inputs_file: Path | None = typer.Option(None, "--inputs-file", help="A JSON file of inputs."),
    variant: str | None = typer.Option(None, "--variant", help="Variant to use, as '${node.variant_1}'."),
    node: str | None = typer.Option(None, "--node", help="Run this node only, with its inputs given."),
    environment_variables: list[str] | None = typer.Option(
        None, "--environment-variables", help="KEY=value set for the run, over the flow's own."
    ),
) -> None:
    """Run the flow once and print its outputs as JSON (streamed outputs shown as they come)."""
    _show_llm_retries()
    values = _gather_inputs(inputs, list(ctx.args), inputs_file)
    executor = FlowExecutor.load(
        enter_flow_dir(flow),
        variant=variant,
        connections=connection_resolver(),
        environment_variables=parse_pairs(environment_variables or [], "--environment-variables"),
    )
    try:
        print_json(asyncio.run(_run(executor, values, node)))
    finally:
        executor.close()


@app.command("validate")
@guarded
def validate(
    flow: Path = typer.Option(..., "--flow", help="The flow folder (or its flow.dag.yaml)."),
) -> None:
    """Check the YAML, references, sources, graph, tools, templates and connections."""
    executor = FlowExecutor.load(flow, connections=connection_resolver())
    executor.close()
    definition = executor.flow
    print_json(
        {
            "flow": str(definition.file),
            "valid": True,
            "inputs": list(definition.inputs),
            "outputs": list(definition.outputs),
            "nodes": list(definition.nodes),
        }
    )
