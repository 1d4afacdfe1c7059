"""The execution plan: the flow's graph, computed once, read many times."""

from __future__ import annotations

from dataclasses import dataclass

from flowport.flow.loader import node_dependencies
from flowport.flow.model import FlowDef, NodeDef
from flowport.flow.reference import NodeRef


@dataclass(frozen=True)
class NodePlan:
    node: NodeDef
    deps: tuple[str, ...]
    """Nodes this node reads (inputs and activate condition)."""
    input_deps: tuple[str, ...]
    """Nodes referenced by its inputs only: bypass propagates when all of these were bypassed."""
    feeds_only_outputs: bool
    """Its output is read by flow outputs and by no other node: it may stay a stream."""
    has_readers: bool
    """Other nodes read its output: a generator output is handed to them as a generator."""


@dataclass(frozen=True)
class Plan:
    flow: FlowDef
    line_nodes: tuple[NodePlan, ...]
    """Per-line nodes in a topological order."""
    aggregation_nodes: tuple[NodePlan, ...]
    output_nodes: frozenset[str]

    def node(self, name: str) -> NodePlan:
        for plan in (*self.line_nodes, *self.aggregation_nodes):
            if plan.node.name == name:
                return plan
        raise KeyError(name)


def build_plan(flow: FlowDef) -> Plan:
    """Order the nodes and precompute who reads whom. The flow is already validated."""
    readers: dict[str, set[str]] = {name: set() for name in flow.nodes}
    for node in flow.nodes.values():
        for dep in node_dependencies(node):
            readers[dep].add(node.name)
    output_nodes = frozenset(
        o.reference.node for o in flow.outputs.values() if isinstance(o.reference, NodeRef)
    )
    order: list[str] = []
    done: set[str] = set()

    def visit(name: str) -> None:
        if name in done:
            return
        done.add(name)
        for dep in sorted(node_dependencies(flow.nodes[name])):
            visit(dep)
        order.append(name)

    for name in flow.nodes:
        visit(name)
    plans = []
    for name in order:
        node = flow.nodes[name]
        plans.append(
            NodePlan(
                node=node,
                deps=tuple(sorted(node_dependencies(node))),
                input_deps=tuple(sorted({b.node for b in node.inputs.values() if isinstance(b, NodeRef)})),
                feeds_only_outputs=name in output_nodes and not readers[name],
                has_readers=bool(readers[name]),
            )
        )
    return Plan(
        flow=flow,
        line_nodes=tuple(p for p in plans if not p.node.aggregation),
        aggregation_nodes=tuple(p for p in plans if p.node.aggregation),
        output_nodes=output_nodes,
    )
