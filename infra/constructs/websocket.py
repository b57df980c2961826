"""The WebSocket API of a stage (issue 17): streamed replies, frame by frame.

Lambda's managed Python runtime cannot stream an HTTP response, so streamed replies go
over an API Gateway WebSocket API: route selection on ``$request.body.action``, the routes
of ``infra.topology.streaming`` (``$connect``, ``$disconnect``, ``$default``, ``invoke``,
``message``) all on ONE function, the stream router; ``$connect`` runs the REQUEST
authorizer ``stream_authorizer`` with no identity sources (it takes an ``Authorization``
header OR ``?ticket=``; with identity sources API Gateway would require all of them, and
WebSocket authorizers cache nothing anyway). The router starts each streamed request on
the agent's own function (its ``live`` alias, asynchronously), which posts the frames
through the management API: ``execute-api:ManageConnections`` is granted on this API's
``@connections`` only. The stage auto-deploys, is throttled like the REST stage and
access-logs one JSON line per connect, message and disconnect.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import jsii
from aws_cdk import Stack
from aws_cdk import aws_apigateway as apigateway
from aws_cdk import aws_apigatewayv2 as apigwv2
from aws_cdk import aws_apigatewayv2_authorizers as authorizers
from aws_cdk import aws_apigatewayv2_integrations as integrations
from aws_cdk import aws_iam as iam
from cdk_nag import NagPackSuppression, RegexAppliesTo
from constructs import Construct

from infra.config import StageConfig
from infra.constructs.agent_function import FunctionDeps, StratusFunction, StratusFunctions
from infra.constructs.logs import stage_log_group
from infra.constructs.nag_rules import default_policy, suppress
from infra.topology.functions import FunctionPlan
from infra.topology.streaming import (
    CONNECT_ROUTE,
    DEFAULT_ROUTE,
    DISCONNECT_ROUTE,
    ROUTE_SELECTION_EXPRESSION,
    WEBSOCKET_ROUTES,
    StreamResources,
    stream_authorizer_plan,
    stream_environment,
    stream_plan,
)

#: One JSON line per WebSocket event (connect, message, disconnect).
ACCESS_LOG_FIELDS: Mapping[str, str] = {
    "requestId": "$context.requestId",
    "extendedRequestId": "$context.extendedRequestId",
    "requestTime": "$context.requestTime",
    "ip": "$context.identity.sourceIp",
    "userAgent": "$context.identity.userAgent",
    "connectionId": "$context.connectionId",
    "eventType": "$context.eventType",
    "routeKey": "$context.routeKey",
    "messageId": "$context.messageId",
    "status": "$context.status",
    "integrationLatency": "$context.integrationLatency",
    "integrationStatus": "$context.integration.status",
    "tenantId": "$context.authorizer.tenant_id",
    "keyId": "$context.authorizer.key_id",
    "authorizerError": "$context.authorizer.error",
    "errorMessage": "$context.error.message",
    "disconnectStatusCode": "$context.disconnectStatusCode",
}
#: The management API call the agent functions make (a frame to a connection).
POST_CONNECTIONS = "POST/@connections/*"
#: What the router may do to a connection: post error frames, describe, close.
ROUTER_CONNECTIONS = ("POST/@connections/*", "GET/@connections/*", "DELETE/@connections/*")


@jsii.implements(apigwv2.IAccessLogSettings)
class _AccessLogs:
    """``IAccessLogSettings`` (an interface in CDK, so a class here)."""

    def __init__(self, destination: apigwv2.IAccessLogDestination, fmt: Any) -> None:
        self._destination = destination
        self._format = fmt

    @property
    def destination(self) -> apigwv2.IAccessLogDestination:
        return self._destination

    @property
    def format(self) -> Any:
        return self._format


def _connections_suppression(reason: str) -> NagPackSuppression:
    return NagPackSuppression(
        id="AwsSolutions-IAM5",
        reason=reason,
        applies_to=[
            RegexAppliesTo(regex=r"/^Resource::arn:.*:execute-api:.*\/@connections\/\*$/g")
        ],
    )


class StratusWebSocket(Construct):
    """The WebSocket API, its stage, the router and the ``$connect`` authorizer functions.

    ``url`` is the ``wss://`` URL clients connect to; ``callback_url`` the management
    endpoint (``STRATUS_WS_CALLBACK_URL``); ``router`` and ``authorizer`` the functions.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        stage: StageConfig,
        functions: StratusFunctions,
        deps: FunctionDeps,
    ) -> None:
        super().__init__(scope, construct_id)
        specs = {name: fn.spec for name, fn in functions.agents.items()}
        self.router = StratusFunction(
            self, "StreamRouter", plan=stream_plan(stage, specs, FunctionPlan), deps=deps
        )
        self.authorizer_function = StratusFunction(
            self, "StreamAuthorizer", plan=stream_authorizer_plan(stage, FunctionPlan), deps=deps
        )
        integration = integrations.WebSocketLambdaIntegration("Router", self.router.function)
        self.authorizer = authorizers.WebSocketLambdaAuthorizer(
            "ConnectAuthorizer", self.authorizer_function.function, identity_source=[]
        )
        self.api = apigwv2.WebSocketApi(
            self,
            "Api",
            api_name=f"stratus-{stage.name}-stream",
            description=f"Stratus streamed replies ({stage.name})",
            route_selection_expression=ROUTE_SELECTION_EXPRESSION,
            connect_route_options=apigwv2.WebSocketRouteOptions(
                integration=integration, authorizer=self.authorizer
            ),
            disconnect_route_options=apigwv2.WebSocketRouteOptions(integration=integration),
            default_route_options=apigwv2.WebSocketRouteOptions(integration=integration),
        )
        for route in WEBSOCKET_ROUTES:
            if route not in (CONNECT_ROUTE, DISCONNECT_ROUTE, DEFAULT_ROUTE):
                self.api.add_route(route, integration=integration)
        self._no_identity_sources()

        self.access_logs = stage_log_group(self, "AccessLogs", stage=stage)
        self.stage = apigwv2.WebSocketStage(
            self,
            "Stage",
            web_socket_api=self.api,
            stage_name=stage.name,
            auto_deploy=True,
            detailed_metrics_enabled=True,
            throttle=apigwv2.ThrottleSettings(
                rate_limit=stage.api_throttle_rate, burst_limit=stage.api_throttle_burst
            ),
            access_log_settings=_AccessLogs(
                apigwv2.LogGroupLogDestination(self.access_logs),
                apigateway.AccessLogFormat.custom(
                    json.dumps(ACCESS_LOG_FIELDS, separators=(",", ":"))
                ),
            ),
        )
        cfn_stage = self.stage.node.default_child
        assert isinstance(cfn_stage, apigwv2.CfnStage)
        # Execution logs, like the REST stage: INFO, never bodies (prompts and answers).
        cfn_stage.add_property_override("DefaultRouteSettings.LoggingLevel", "INFO")
        cfn_stage.add_property_override("DefaultRouteSettings.DataTraceEnabled", False)

        self._wire(functions)
        self._suppress()

    @property
    def url(self) -> str:
        """``wss://{apiId}.execute-api.{region}.amazonaws.com/{stage}``."""
        return self.stage.url

    @property
    def callback_url(self) -> str:
        """``https://{apiId}.execute-api.{region}.amazonaws.com/{stage}``."""
        return self.stage.callback_url

    def connections_arn(self, path: str) -> str:
        """``arn:...:execute-api:{region}:{account}:{apiId}/{stage}/<path>``."""
        return Stack.of(self).format_arn(
            service="execute-api",
            resource=self.api.api_id,
            resource_name=f"{self.stage.stage_name}/{path}",
        )

    def _no_identity_sources(self) -> None:
        """CDK renders ``identity_source=[]`` as an empty list; CloudFormation wants the
        property absent for "no identity sources" (REQUEST authorizer, no caching)."""
        found = [c for c in self.api.node.find_all() if isinstance(c, apigwv2.CfnAuthorizer)]
        assert len(found) == 1, found
        found[0].add_property_deletion_override("IdentitySource")

    def _wire(self, functions: StratusFunctions) -> None:
        """Streaming environment and grants: the router and every agent's API function."""
        resources = StreamResources(
            callback_url=self.callback_url,
            functions={
                name: fn.invocable.function_arn for name, fn in sorted(functions.agents.items())
            },
            to_json=Stack.of(self).to_json_string,
        )
        for fn in (self.router, *functions.agents.values()):
            env = stream_environment(fn.plan.stream, fn.plan.stream_agents, resources)
            for name, value in env.items():
                fn.function.add_environment(name, value)
        for agent in functions.agents.values():
            agent.invocable.grant_invoke(self.router.function)
            agent.function.add_to_role_policy(
                iam.PolicyStatement(
                    actions=["execute-api:ManageConnections"],
                    resources=[self.connections_arn(POST_CONNECTIONS)],
                )
            )
        self.router.function.add_to_role_policy(
            iam.PolicyStatement(
                actions=["execute-api:ManageConnections"],
                resources=[self.connections_arn(path) for path in ROUTER_CONNECTIONS],
            )
        )
        self._agents = list(functions.agents.values())

    def _suppress(self) -> None:
        suppress(
            default_policy(self.router.role),
            _connections_suppression(
                "The router posts error frames to, describes and closes the connections of "
                "this one WebSocket API and stage (any connection id: ids are per client)."
            ),
        )
        for agent in self._agents:
            suppress(
                default_policy(agent.role),
                _connections_suppression(
                    "An agent's function posts the frames of the requests it streams to "
                    "connections of this one WebSocket API and stage (POST only; any "
                    "connection id: ids are per client)."
                ),
            )
        for route in self.api.node.find_all():
            if isinstance(route, apigwv2.CfnRoute) and route.route_key != CONNECT_ROUTE:
                suppress(
                    route,
                    NagPackSuppression(
                        id="AwsSolutions-APIG4",
                        reason=(
                            "API Gateway allows an authorizer on $connect only; every "
                            "message and disconnect belongs to a connection that $connect "
                            "authorized (tenant key or ticket), whose context the router "
                            "checks (scopes) on every frame."
                        ),
                    ),
                )
