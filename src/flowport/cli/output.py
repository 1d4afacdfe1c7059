"""``-o json|table|tsv|yaml|none``: how az prints results."""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Any

import typer
import yaml

OUTPUT_HELP = "Output format: json (default), table, tsv, yaml or none."


class Output(StrEnum):
    json = "json"
    table = "table"
    tsv = "tsv"
    yaml = "yaml"
    none = "none"


OutputOption = typer.Option(Output.json, "--output", "-o", help=OUTPUT_HELP, case_sensitive=False)


def _cell(value: Any) -> str:
    if isinstance(value, dict):
        return " ".join(f"{k}={v}" for k, v in value.items())
    if isinstance(value, list):
        return ",".join(_cell(v) for v in value)
    return "" if value is None else str(value)


def _scalars(row: dict[str, Any], columns: list[str] | None) -> dict[str, Any]:
    if columns:
        return {c: row.get(c) for c in columns}
    return {k: v for k, v in row.items() if not isinstance(v, dict | list) or k in ("traffic", "tags")}


def emit(value: Any, output: Output, columns: list[str] | None = None) -> None:
    """Print ``value``; ``columns`` picks what a table shows for lists of resources."""
    if output is Output.none:
        return
    if output is Output.json:
        typer.echo(json.dumps(value, indent=2, ensure_ascii=False, default=str))
        return
    if output is Output.yaml:
        typer.echo(yaml.safe_dump(json.loads(json.dumps(value, default=str)), sort_keys=False).rstrip())
        return
    rows = value if isinstance(value, list) else [value]
    rows = [_scalars(r, columns) if isinstance(r, dict) else {"value": r} for r in rows]
    if not rows:
        return
    headers = list(rows[0])
    cells = [[_cell(r.get(h)) for h in headers] for r in rows]
    if output is Output.tsv:
        for line in cells:
            typer.echo("\t".join(line))
        return
    widths = [max(len(h), *(len(line[i]) for line in cells)) for i, h in enumerate(headers)]
    typer.echo("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    typer.echo("  ".join("-" * w for w in widths))
    for line in cells:
        typer.echo("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())
