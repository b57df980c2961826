"""Health, OpenAPI, sample events and what each handler imports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import boto3
import pytest
from aws_lambda_powertools.utilities.parser import parse
from aws_lambda_powertools.utilities.parser.models import (
    ApiGatewayAuthorizerRequest,
    APIGatewayProxyEventModel,
)

from functions.handlers import api
from tests.support import EVENTS, call, load_event

ROOT = Path(__file__).resolve().parents[2]


def test_health_reports_ok_when_dependencies_answer(serve_agent: Any) -> None:
    serve_agent("")
    reply = call(api.lambda_handler, load_event("api/health.json"))
    assert reply.status == 200
    assert reply.body["status"] == "ok"
    assert reply.body["agent"] is None
    assert reply.body["checks"] == {
        "tenants_table": "ok",
        "idempotency_table": "ok",
        "orders_table": "ok",
    }


def test_agent_health_checks_the_model_secret(serve_agent: Any, cloud: dict[str, Any]) -> None:
    serve_agent("triage")
    reply = call(api.lambda_handler, load_event("api/health.json"))
    assert reply.status == 200
    assert reply.body["checks"]["model_keys"] == "ok"

    boto3.client("secretsmanager").delete_secret(
        SecretId=cloud["secret_arn"], ForceDeleteWithoutRecovery=True
    )
    serve_agent("triage")  # a new process: no cached secret
    degraded = call(api.lambda_handler, load_event("api/health.json"))
    assert degraded.status == 503
    assert degraded.body["status"] == "degraded"
    assert degraded.body["checks"]["model_keys"] == "error"


def test_openapi_document_describes_the_invoke_route(serve_agent: Any) -> None:
    serve_agent("")
    event = load_event("api/health.json")
    event["path"] = event["resource"] = "/v1/openapi.json"
    reply = call(api.lambda_handler, event)
    assert reply.status == 200
    doc = reply.body
    assert doc["openapi"].startswith("3.")
    operation = doc["paths"]["/v1/agents/{agent}/invoke"]["post"]
    assert "requestBody" in operation
    assert {"200", "404", "409", "413", "422", "502", "503"} <= set(operation["responses"])
    assert "InvokeRequest" in doc["components"]["schemas"]
    assert "/v1/health" in doc["paths"]


def _openapi(serve_agent: Any) -> dict[str, Any]:
    serve_agent("")
    event = load_event("api/health.json")
    event["path"] = event["resource"] = "/v1/openapi.json"
    reply = call(api.lambda_handler, event)
    assert reply.status == 200
    return dict(reply.body)


def test_openapi_document_is_a_valid_openapi_3_1_document(serve_agent: Any) -> None:
    from openapi_spec_validator import validate
    from openapi_spec_validator.validation import OpenAPIV31SpecValidator

    doc = _openapi(serve_agent)
    assert doc["openapi"] == "3.1.0"
    validate(doc, cls=OpenAPIV31SpecValidator)  # every $ref resolves, every schema is valid
    assert "ErrorResponse" in doc["components"]["schemas"]


def test_openapi_document_declares_the_bearer_key_on_every_authorized_operation(
    serve_agent: Any,
) -> None:
    doc = _openapi(serve_agent)
    assert doc["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "description": doc["components"]["securitySchemes"]["bearerAuth"]["description"],
    }
    public = {"/v1/health", "/v1/openapi.json"}
    assert public <= set(doc["paths"])
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            if path in public:
                assert operation["security"] == [], (method, path)
            else:
                assert operation["security"] == [{"bearerAuth": []}], (method, path)
                assert "401" in operation["responses"], (method, path)


def test_openapi_errors_are_the_error_shape_and_health_is_an_object(serve_agent: Any) -> None:
    doc = _openapi(serve_agent)
    error_ref = {"$ref": "#/components/schemas/ErrorResponse"}
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            for status, response in operation["responses"].items():
                if int(status) >= 400 and path != "/v1/health":  # a 503 health is a report
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == error_ref, (method, path, status)
    assert "HTTPValidationError" not in doc["components"]["schemas"]
    deleted = doc["paths"]["/v1/agents/{agent}/sessions/{session_id}"]["delete"]["responses"]
    assert "content" not in deleted["204"]  # 204 has no body
    health = doc["paths"]["/v1/health"]["get"]["responses"]
    for status in ("200", "503"):
        schema = health[status]["content"]["application/json"]["schema"]
        assert schema == {"$ref": "#/components/schemas/HealthResponse"}
    assert doc["components"]["schemas"]["HealthResponse"]["type"] == "object"
    # And the health body the function returns matches that schema.
    from stratus.contracts import HealthResponse

    HealthResponse.model_validate(call(api.lambda_handler, load_event("api/health.json")).body)


def sample_events() -> list[str]:
    return sorted(str(p.relative_to(EVENTS)) for p in EVENTS.rglob("*.json"))


@pytest.mark.parametrize("name", sample_events())
def test_every_sample_event_parses(name: str) -> None:
    event = json.loads((EVENTS / name).read_text(encoding="utf-8"))
    if name.startswith("producer/"):  # producer contract v1: its schema and sample messages
        from stratus.jobs import ProducerMessage, producer_contract_schema

        if name.endswith(".schema.json"):
            assert event == producer_contract_schema()
        else:
            ProducerMessage.model_validate(event)
        return
    if name.startswith("codedeploy/"):  # a CodeDeploy lifecycle hook's event
        from stratus.release_hooks import HookEvent

        HookEvent.model_validate(event)
        return
    if name.startswith("websocket/"):  # the streaming protocol: schema, frames, events
        from tests.stream_samples import check_websocket_sample

        check_websocket_sample(name, event)
        return
    if name.startswith("sqs/"):
        from aws_lambda_powertools.utilities.parser.models import SqsModel

        parse(event=event, model=SqsModel)
        return
    model = (
        ApiGatewayAuthorizerRequest if name.startswith("authorizer/") else APIGatewayProxyEventModel
    )
    parse(event=event, model=model)


@pytest.mark.parametrize("name", sample_events())
def test_every_sample_event_is_used_by_a_test(name: str) -> None:
    sources = list((ROOT / "tests").rglob("*.py"))
    assert any(f'"{name}"' in p.read_text(encoding="utf-8") for p in sources), name


NEW_PACKAGES = """
import json, sys
{before}
loaded = {{m.split(".")[0] for m in sys.modules}}
import {module}
print(json.dumps(sorted({{m.split(".")[0] for m in sys.modules}} - loaded)))
"""
ENV = {"PATH": "/usr/bin:/bin", "POWERTOOLS_TRACE_DISABLED": "1", "AWS_DEFAULT_REGION": "eu-west-1"}


def _new_packages(module: str, before: str = "") -> set[str]:
    """Top-level packages that importing ``module`` loads, after the imports ``before``."""
    out = subprocess.run(
        [sys.executable, "-c", NEW_PACKAGES.format(module=module, before=before)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        env=ENV,
    )
    return set(json.loads(out.stdout))


def _model_path_packages() -> set[str]:
    """What only the model path loads: openai and the HTTP client it brings, found, not named.

    This openai pulls ``httpx2``/``httpcore2``, so a hard-coded ``"httpx"`` would never match;
    the asserts keep the check below able to fail.
    """
    shared = "import pydantic, boto3, aws_lambda_powertools, typing_extensions"
    packages = {
        name
        for name in _new_packages("openai", before=shared)
        if name == "openai" or ("http" in name and name not in sys.stdlib_module_names)
    }
    assert "openai" in packages
    assert len(packages) >= 2, packages
    return packages


@pytest.mark.parametrize("module", ["functions.handlers.api", "functions.handlers.authorizer"])
def test_handlers_do_not_import_openai_at_cold_start(module: str) -> None:
    loaded = _new_packages(module)
    assert "functions" in loaded  # the handler itself was imported
    assert loaded & _model_path_packages() == set()


def test_a_health_check_does_not_load_the_model_client(serve_agent: Any) -> None:
    serve_agent("triage")
    script = """
import json, os, sys
from moto import mock_aws
with mock_aws():
    from functions.handlers import api
    from tests.support import load_event
    from tests.support import FakeLambdaContext
    api.lambda_handler(load_event("api/health.json"), FakeLambdaContext())
print(json.dumps("openai" in sys.modules))
"""
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) is False
