"""The public HTTP contracts (request and response bodies) of the Stratus API.

These models drive request validation in the handlers, the OpenAPI document
served at ``/v1/openapi.json``, and the API Gateway request models in the CDK
stack, so the three can never disagree.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from stratus.usage import Usage

JsonObject = dict[str, Any]


class InvokeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input: str | JsonObject = Field(description="The user's message, or a JSON object.")
    metadata: JsonObject = Field(default_factory=dict, description="Opaque; echoed in logs.")


class AgentRef(BaseModel):
    name: str
    version: str


class InvokeResponse(BaseModel):
    output: str | JsonObject
    usage: Usage
    cost_usd: float
    model: str
    agent: AgentRef
    request_id: str


class ErrorDetail(BaseModel):
    code: str
    message: str
    request_id: str | None = None
    details: JsonObject | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


class HealthResponse(BaseModel):
    status: str
    version: str
    agent: str | None
    checks: dict[str, str]
