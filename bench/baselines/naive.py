"""Baseline: a handler written the way most tutorials write one.

Everything is imported eagerly at the top (boto3, openai, pydantic, Powertools
with its REST resolver) and the clients are created at import time, so every
cold start pays for all of it whether the request needs a model or not.
"""

from __future__ import annotations

import os
from typing import Any

import boto3
import openai
from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.event_handler import APIGatewayRestResolver
from pydantic import BaseModel

logger = Logger(service="bench")
tracer = Tracer(service="bench")
metrics = Metrics(namespace="StratusBench", service="bench")
app = APIGatewayRestResolver()

dynamodb = boto3.client("dynamodb")
llm = openai.OpenAI(api_key=os.environ.get("OPENAI_API_KEY", "sk-bench"))


class InvokeRequest(BaseModel):
    input: str


@app.post("/v1/agents/<agent>/invoke")
def invoke(agent: str) -> dict[str, Any]:
    request = InvokeRequest.model_validate(app.current_event.json_body)
    completion = llm.chat.completions.create(
        model="gpt-5-mini",
        messages=[{"role": "user", "content": request.input}],
    )
    return {"output": completion.choices[0].message.content}


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return app.resolve(event, context)
