"""``flowport flow``: test and validate a flow folder locally."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from pathlib import Path
from typing import Any

import typer

from flowport.cli import build_cmds, serve_cmd
from flowport.cli.common import (
    connection_resolver,
    fail,
    flow_source,
    guarded,
    parse_pairs,
    print_json,
    read_json_file,
)
from flowport.cli.trace_cmds import local_trace
from flowport.engine import FlexExecutor, FlowExecutor, NodeStream, load_executor, parse_init, persist_images

app = typer.Typer(help="Test, validate, serve and build prompt flow folders.", no_args_is_help=True)
app.command("serve")(serve_cmd.serve)
app.command("build")(build_cmds.flow_build)


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


async def _run(executor: FlowExecutor | FlexExecutor, values: dict[str, Any], node: str | None) -> Any:
    if isinstance(executor, FlexExecutor):
        if node:
            fail("--node applies to DAG flows; a flex flow is one function")
        result = await executor.run_line(values, stream=True)
    elif node:
        return await executor.run_single_node(node, values)
    else:
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


def _output_folder(executor: FlowExecutor | FlexExecutor, source: Any) -> Path:
    """``<flow folder>/.promptflow/output``: where pf flow test writes output images."""
    folder = executor.flow.path if isinstance(executor, FlowExecutor) else Path(str(source))
    if not folder.is_dir():
        folder = folder.parent if folder.exists() else Path.cwd()
    return folder / ".promptflow" / "output"


@app.command("test", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@guarded
def test(
    ctx: typer.Context,
    flow: Path = typer.Option(
        ..., "--flow", help="The flow folder, its flow.dag.yaml / flow.flex.yaml, or module:function here."
    ),
    inputs: list[str] | None = typer.Option(None, "--inputs", help="Inputs as key=value (repeatable)."),
    inputs_file: Path | None = typer.Option(None, "--inputs-file", help="A JSON file of inputs."),
    variant: str | None = typer.Option(None, "--variant", help="Variant to use, as '${node.variant_1}'."),
    node: str | None = typer.Option(None, "--node", help="Run this node only, with its inputs given."),
    environment_variables: list[str] | None = typer.Option(
        None, "--environment-variables", help="KEY=value set for the run, over the flow's own."
    ),
    init: list[str] | None = typer.Option(
        None, "--init", help="A flex flow class's __init__ arguments: JSON, a JSON/YAML file, or key=value."
    ),
    trace: bool = typer.Option(
        False, "--trace", help="Trace the run: print its span tree and keep it under .promptflow/traces."
    ),
) -> None:
    """Run the flow once and print its outputs as JSON (streamed outputs shown as they come)."""
    _show_llm_retries()
    values = _gather_inputs(inputs, list(ctx.args), inputs_file)
    init_values = parse_init(init)
    source = flow_source(flow)
    if trace:
        with local_trace(source):
            _test(source, values, variant, node, environment_variables, init_values)
    else:
        _test(source, values, variant, node, environment_variables, init_values)


def _test(
    source: Any,
    values: dict[str, Any],
    variant: str | None,
    node: str | None,
    environment_variables: list[str] | None,
    init_values: Any,
) -> None:
    executor = load_executor(
        source,
        variant=variant,
        init=init_values,
        connections=connection_resolver(),
        environment_variables=parse_pairs(environment_variables or [], "--environment-variables"),
    )
    if isinstance(executor, FlexExecutor) and not values:
        values = dict(executor.definition.sample_inputs)  # as pf does: the YAML's sample.inputs
    try:
        outputs = asyncio.run(_run(executor, values, node))
        # images go to files, as pf flow test writes them: {"data:image/png;path": "<absolute path>"}
        print_json(persist_images(outputs, _output_folder(executor, source)))
    finally:
        executor.close()


@app.command("validate")
@guarded
def validate(
    flow: Path = typer.Option(
        ..., "--flow", help="The flow folder, its flow.dag.yaml / flow.flex.yaml, or module:function here."
    ),
    init: list[str] | None = typer.Option(None, "--init", help="A flex flow class's __init__ arguments."),
) -> None:
    """Check the YAML, references, sources, graph, tools, templates and connections (a flex flow:
    its entry imports, its signature and return annotation read, a class built with its init)."""
    executor = load_executor(flow_source(flow), init=parse_init(init), connections=connection_resolver())
    executor.close()
    definition = executor.flow
    report: dict[str, Any] = {"flow": str(definition.file), "valid": True, "inputs": list(definition.inputs)}
    if isinstance(executor, FlexExecutor):
        report["entry"] = executor.definition.entry
        report["outputs"] = None if executor.dynamic_outputs else list(definition.outputs)
    else:
        report["outputs"] = list(definition.outputs)
        report["nodes"] = list(definition.nodes)
    print_json(report)
