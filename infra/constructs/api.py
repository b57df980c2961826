"""The public REST API: routes from ``infra.topology``, a Lambda authorizer, safe stage settings.

Every method except the two public platform routes goes through the REQUEST
authorizer (``Authorization`` header, decisions cached 60 s). Bodies are
validated by the handlers, not by a gateway request model: API Gateway's
``BAD_REQUEST_BODY`` cannot tell a body that is not JSON (``400 invalid_json``)
from one that does not match the schema (``422 validation_error``), so a model
would break the documented codes; a bad body costs one short Lambda invocation
that rejects it before any model call. Errors API Gateway produces itself use
the same JSON shape and codes as the handlers (``infra.topology.GATEWAY_ERRORS``,
built on ``stratus.errors``), so clients parse one error format.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_apigateway as apigateway
from cdk_nag import NagPackSuppression
from constructs import Construct

from infra.config import StageConfig
from infra.constructs.agent_function import StratusFunction, StratusFunctions
from infra.constructs.logs import stage_log_group
from infra.constructs.nag_rules import suppress
from infra.topology import GATEWAY_ERRORS, GatewayError, Route

AUTHORIZER_CACHE_TTL = Duration.seconds(60)

#: One line per request, JSON (CloudWatch Logs Insights parses it without a pattern).
ACCESS_LOG_FIELDS: Mapping[str, str] = {
    "requestId": "$context.requestId",
    "extendedRequestId": "$context.extendedRequestId",
    "requestTime": "$context.requestTime",
    "ip": "$context.identity.sourceIp",
    "caller": "$context.identity.caller",
    "user": "$context.identity.user",
    "userAgent": "$context.identity.userAgent",
    "httpMethod": "$context.httpMethod",
    "resourcePath": "$context.resourcePath",
    "path": "$context.path",
    "protocol": "$context.protocol",
    "status": "$context.status",
    "responseLength": "$context.responseLength",
    "responseLatency": "$context.responseLatency",
    "integrationLatency": "$context.integration.latency",
    "integrationStatus": "$context.integration.status",
    "tenantId": "$context.authorizer.tenant_id",
    "authorizerError": "$context.authorizer.error",
    "errorType": "$context.error.responseType",
    "errorMessage": "$context.error.message",
    "xrayTraceId": "$context.xrayTraceId",
}


class StratusApi(Construct):
    """The REST API; ``api`` is the RestApi, ``url`` its stage URL, ``methods`` by route."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        stage: StageConfig,
        functions: StratusFunctions,
        routes: Sequence[Route],
    ) -> None:
        super().__init__(scope, construct_id)
        self.access_logs = stage_log_group(self, "AccessLogs", stage=stage)
        self.api = apigateway.RestApi(
            self,
            "RestApi",
            rest_api_name=f"stratus-{stage.name}",
            description=f"Stratus agents API ({stage.name})",
            endpoint_types=[apigateway.EndpointType.REGIONAL],
            cloud_watch_role=stage.api_gateway_cloudwatch_role,
            # The account-level role outlives this stack: other APIs may rely on it.
            cloud_watch_role_removal_policy=RemovalPolicy.RETAIN,
            deploy_options=apigateway.StageOptions(
                stage_name=stage.name,
                access_log_destination=apigateway.LogGroupLogDestination(self.access_logs),
                access_log_format=apigateway.AccessLogFormat.custom(
                    json.dumps(ACCESS_LOG_FIELDS, separators=(",", ":"))
                ),
                tracing_enabled=True,
                logging_level=apigateway.MethodLoggingLevel.INFO,
                # Request/response bodies would put prompts and answers in the logs.
                data_trace_enabled=False,
                metrics_enabled=True,
                throttling_rate_limit=stage.api_throttle_rate,
                throttling_burst_limit=stage.api_throttle_burst,
                # The unauthenticated routes (health, OpenAPI) get their own, lower limit:
                # a flood of them is throttled there and cannot use up the tenants' share.
                method_options={
                    f"{route.path}/{route.method}": apigateway.MethodDeploymentOptions(
                        throttling_rate_limit=stage.public_throttle_rate,
                        throttling_burst_limit=stage.public_throttle_burst,
                        logging_level=apigateway.MethodLoggingLevel.INFO,
                        data_trace_enabled=False,
                        metrics_enabled=True,
                    )
                    for route in routes
                    if not route.authorized
                },
            ),
        )
        self.authorizer = apigateway.RequestAuthorizer(
            self,
            "Authorizer",
            handler=functions.authorizer.function,
            identity_sources=[apigateway.IdentitySource.header("Authorization")],
            # The stage's window (default 60 s): revocation and suspension take effect within it.
            results_cache_ttl=Duration.seconds(stage.authorizer_cache_s),
        )
        self.gateway_responses = [self._gateway_response(error) for error in GATEWAY_ERRORS]

        #: (verb, path) -> the route and the method built for it.
        self.routes: dict[tuple[str, str], Route] = {}
        self.methods: dict[tuple[str, str], apigateway.Method] = {}
        targets = functions.by_key
        for route in routes:
            key = (route.method, route.path)
            self.routes[key] = route
            self.methods[key] = self._method(route, targets[route.target])
        self._suppress()

    @property
    def url(self) -> str:
        return self.api.url

    @property
    def public_methods(self) -> list[apigateway.Method]:
        """Methods without the authorizer (health and OpenAPI only)."""
        return [self.methods[key] for key, route in self.routes.items() if not route.authorized]

    @property
    def authorized_methods(self) -> list[apigateway.Method]:
        return [self.methods[key] for key, route in self.routes.items() if route.authorized]

    def _suppress(self) -> None:
        """The API's own cdk-nag suppressions: logging role, stage and methods."""
        cloudwatch_role = self.api.node.try_find_child("CloudWatchRole")
        if cloudwatch_role is not None:  # only when the stage creates the account-level role
            suppress(
                cloudwatch_role,
                NagPackSuppression(
                    id="AwsSolutions-IAM4",
                    reason=(
                        "API Gateway's account-level logging role must carry the AWS-managed "
                        "AmazonAPIGatewayPushToCloudWatchLogs policy, the documented setup; "
                        "it is assumed by apigateway.amazonaws.com only."
                    ),
                    applies_to=[
                        "Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
                        "AmazonAPIGatewayPushToCloudWatchLogs"
                    ],
                ),
            )
        suppress(
            self.api,
            NagPackSuppression(
                id="AwsSolutions-APIG2",
                reason=(
                    "Every body is validated by the handler (Powertools, pydantic), which can "
                    "tell a body that is not JSON (400 invalid_json) from one that does not "
                    "match the schema (422 validation_error); API Gateway's request "
                    "validator answers both with one BAD_REQUEST_BODY, so the documented "
                    "error codes could not hold with it."
                ),
            ),
        )
        suppress(
            self.api.deployment_stage,
            NagPackSuppression(
                id="AwsSolutions-APIG3",
                reason=(
                    "AWS WAF is optional and priced per web ACL; every route except health "
                    "and OpenAPI requires an API key and the stage is throttled. Associate "
                    "a web ACL with the stage where the threat model needs one."
                ),
            ),
        )
        for method in self.authorized_methods:
            suppress(
                method,
                NagPackSuppression(
                    id="AwsSolutions-COG4",
                    reason=(
                        "Authorized by the Lambda REQUEST authorizer (tenant API keys from the "
                        "tenants table); callers are other systems, not Cognito users."
                    ),
                ),
            )
        for method in self.public_methods:
            suppress(
                method,
                NagPackSuppression(
                    id="AwsSolutions-APIG4",
                    reason=(
                        "Intentionally public: health check and OpenAPI document for load "
                        "balancers, uptime probes and client generators; no tenant data."
                    ),
                ),
                NagPackSuppression(
                    id="AwsSolutions-COG4",
                    reason=(
                        "Intentionally public (health check, OpenAPI document): no "
                        "authorizer of any kind, so no Cognito user pool either."
                    ),
                ),
            )

    def _resource(self, path: str) -> apigateway.IResource:
        resource: apigateway.IResource = self.api.root
        for segment in path.strip("/").split("/"):
            resource = resource.get_resource(segment) or resource.add_resource(segment)
        return resource

    def _method(self, route: Route, target: StratusFunction) -> apigateway.Method:
        # An agent's routes call its ``live`` alias (CodeDeploy shifts it), never $LATEST.
        integration = apigateway.LambdaIntegration(
            target.invocable,
            proxy=True,
            # Test-invoke permissions would double the function's resource policy.
            allow_test_invoke=False,
        )
        options: dict[str, Any] = {}
        if route.authorized:
            options["authorizer"] = self.authorizer
            options["authorization_type"] = apigateway.AuthorizationType.CUSTOM
        else:
            options["authorization_type"] = apigateway.AuthorizationType.NONE
        method = self._resource(route.path).add_method(route.method, integration, **options)
        return method

    def _gateway_response(self, error: GatewayError) -> apigateway.GatewayResponse:
        return self.api.add_gateway_response(
            f"{error.name}Response",
            type=apigateway.ResponseType.of(error.response_type),
            status_code=str(error.status) if error.status is not None else None,
            templates={"application/json": error.template()},
            # The caller's X-Correlation-Id back on API Gateway's own answers (issue 16).
            response_headers={"X-Correlation-Id": "method.request.header.X-Correlation-Id"},
        )
