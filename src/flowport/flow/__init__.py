"""The flow definition: loading, validating and planning a prompt flow folder."""

from flowport.flow.errors import FlowError, Problem
from flowport.flow.loader import load_flow, parse_variant
from flowport.flow.model import MISSING, FlowDef, InputDef, NodeDef, OutputDef, ValueType
from flowport.flow.plan import NodePlan, Plan, build_plan

__all__ = [
    "MISSING",
    "FlowDef",
    "FlowError",
    "InputDef",
    "NodeDef",
    "NodePlan",
    "OutputDef",
    "Plan",
    "Problem",
    "ValueType",
    "build_plan",
    "load_flow",
    "parse_variant",
]
