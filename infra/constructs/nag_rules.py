"""How a construct attaches its cdk-nag suppressions: to one resource, each with its reason.

A suppression goes on the construct's own CloudFormation resource (and, for
wildcard findings, names the exact ``applies_to`` entry), never on a whole rule
stack-wide. Findings that could be fixed were fixed instead (own function roles
without the managed basic-execution policy, JSON access logs, throttling,
tracing, ...). Imports nothing of the stack or its constructs.
"""

from __future__ import annotations

from cdk_nag import NagPackSuppression, NagSuppressions
from constructs import IConstruct


def suppress(construct: IConstruct, *suppressions: NagPackSuppression) -> None:
    """Suppress on the construct's own CloudFormation resource only, not its children."""
    target = construct.node.default_child or construct
    NagSuppressions.add_resource_suppressions(target, list(suppressions), apply_to_children=False)


def default_policy(construct: IConstruct) -> IConstruct:
    """The ``DefaultPolicy`` of a role (where grants and the X-Ray statement land)."""
    return construct.node.find_child("DefaultPolicy")
