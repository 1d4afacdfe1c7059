"""Worker for record_cases.py, run with prompt flow's python: call prompt flow's own package
tool functions for each package node of a flow, as ``pf flow test`` would if it found them.

Arguments: the flow folder, then the case's inputs as JSON. Prints the flow outputs that
reference those nodes (``${node.output}``) on the result line.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

from _promptflow import emit_result
from promptflow._sdk._pf_client import PFClient
from promptflow._utils.yaml_utils import load_yaml


def main(folder: str, inputs_json: str) -> None:
    flow = load_yaml(Path(folder, "flow.dag.yaml"))
    given = json.loads(inputs_json)
    values = {k: given.get(k, spec.get("default")) for k, spec in flow["inputs"].items()}
    client = PFClient()
    outputs = {}
    for node in flow["nodes"]:
        source = node["source"]
        if source.get("type") != "package":
            continue
        module, _, name = source["tool"].rpartition(".")
        function = getattr(importlib.import_module(module), name)
        kwargs = {}
        for key, value in node["inputs"].items():
            if key == "connection":
                value = client.connections.get(value, with_secrets=True)
            elif isinstance(value, str) and value.startswith("${inputs."):
                value = values[value[len("${inputs.") : -1]]
            kwargs[key] = value
        outputs[node["name"]] = function(**kwargs)
    result = {}
    for key, spec in flow["outputs"].items():
        node = spec["reference"][2:].split(".")[0]
        result[key] = outputs[node]
    emit_result(result)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
