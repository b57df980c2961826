"""The CDK constructs of the Stratus stack, one per concern.

Each construct takes its decisions from plain data (``infra.definitions``,
``infra.topology``, ``infra.config``) so the local cloud can reproduce them.
"""

from infra.constructs.agent_function import StratusFunction, StratusFunctions
from infra.constructs.api import StratusApi
from infra.constructs.function_code import FunctionCode
from infra.constructs.runtime_layer import RuntimeLayer
from infra.constructs.secrets import ModelSecret
from infra.constructs.tables import StratusTables

__all__ = [
    "FunctionCode",
    "ModelSecret",
    "RuntimeLayer",
    "StratusApi",
    "StratusFunction",
    "StratusFunctions",
    "StratusTables",
]
