"""What runs where, as plain data: functions (environment, grants), queues, workflows, routes.

The CDK constructs build Lambda functions, queues, state machines and API
Gateway routes from these plans, and the local cloud runs the same handlers with
the same variables behind the same routes, so the two cannot drift. Resource
values (table names, the secret ARN) are the only part that differs: CDK fills
in tokens, the local cloud its own names, both through
:meth:`FunctionPlan.environment`. No CDK import here.
"""

from infra.topology.common import (
    AGENT_RESOURCES,
    API_HANDLER,
    AUTHORIZER_HANDLER,
    CALLBACK_SECRET_ENV,
    GATEWAY_TABLES,
    INGEST_HANDLER,
    INGEST_QUEUE,
    INGEST_TIMEOUT_S,
    JOB_QUEUES_ENV,
    JOBS_TOPIC_ENV,
    MODEL_SECRET_ENV,
    POWERTOOLS_ENV,
    TABLE_ENV,
    WORKER_HANDLER,
    WORKFLOWS_DIR,
    WORKFLOWS_ENV,
    FunctionKind,
    TableAccess,
    WorkflowAccess,
    agent_queue,
    alerts_topic_name,
    dlq,
    pascal,
)
from infra.topology.functions import (
    FunctionPlan,
    JobResources,
    agent_plan,
    authorizer_plan,
    function_plans,
    ingest_plan,
    platform_plan,
    worker_plan,
)
from infra.topology.gateway_errors import GATEWAY_ERRORS, GatewayError, gateway_error
from infra.topology.queues import QueuePlan, queue_plans
from infra.topology.routes import Route, api_routes
from infra.topology.workflows import WorkflowPlan, workflow_plans

__all__ = [
    "AGENT_RESOURCES",
    "API_HANDLER",
    "AUTHORIZER_HANDLER",
    "CALLBACK_SECRET_ENV",
    "GATEWAY_ERRORS",
    "GATEWAY_TABLES",
    "INGEST_HANDLER",
    "INGEST_QUEUE",
    "INGEST_TIMEOUT_S",
    "JOBS_TOPIC_ENV",
    "JOB_QUEUES_ENV",
    "MODEL_SECRET_ENV",
    "POWERTOOLS_ENV",
    "TABLE_ENV",
    "WORKER_HANDLER",
    "WORKFLOWS_DIR",
    "WORKFLOWS_ENV",
    "FunctionKind",
    "FunctionPlan",
    "GatewayError",
    "JobResources",
    "QueuePlan",
    "Route",
    "TableAccess",
    "WorkflowAccess",
    "WorkflowPlan",
    "agent_plan",
    "agent_queue",
    "alerts_topic_name",
    "api_routes",
    "authorizer_plan",
    "dlq",
    "function_plans",
    "gateway_error",
    "ingest_plan",
    "pascal",
    "platform_plan",
    "queue_plans",
    "worker_plan",
    "workflow_plans",
]
