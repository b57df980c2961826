"""What the console's JSON endpoints answer, read from a running local cloud.

Every answer is read when asked (the page polls), from what the local cloud already
keeps: the moto tables (jobs, sessions, budgets), its queues (the DLQs), moto
CloudWatch (the metrics the EMF forwarder put there, :mod:`infra.local.console.metrics`),
the recent log lines (:class:`infra.local.log_buffer.LogBuffer`) and the fake model.
The tables are small on a laptop, so jobs and sessions are scans (never on AWS).
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from infra.cost_report import cost_report, day_range, known_agents
from infra.local.console.metrics import agent_series
from infra.local.facts import LOCAL_CREDENTIALS

#: ``X-Correlation-Id`` values the API accepts (the observability contract).
CORRELATION_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
NANO = Decimal(1_000_000_000)
JOBS_SHOWN = 50
#: Seconds an answer is reused for other pages polling at the same time.
CACHE_S = 1.5
SESSIONS_SHOWN = 50
#: Budget limits a scope falls back to: the setting's name.
LIMIT_SETTINGS = {
    "global_day": "budget_global_daily_usd",
    "tenant_day": "budget_tenant_daily_usd",
    "tenant_month": "budget_tenant_monthly_usd",
    "agent_day": "budget_agent_daily_usd",
}


class BadRequest(ValueError):
    """A query parameter the console refuses (400, with a stable code)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_plain(v) for v in value]
    return value


def _json_field(raw: Any) -> Any:
    if not isinstance(raw, str):
        return raw
    try:
        return json.loads(raw)
    except ValueError:
        return raw


class ConsoleData:
    """The console's answers for one local cloud (``cloud``: a started ``LocalCloud``)."""

    def __init__(
        self,
        cloud: Any,
        clock: Callable[[], datetime] | None = None,
        client_factory: Callable[[str], Any] | None = None,
    ) -> None:
        """``client_factory`` (tests): service -> boto3 client; else the cloud's endpoint."""
        self._cloud = cloud
        self._clients: dict[str, Any] = {}
        self._clock = clock or (lambda: datetime.now(UTC))
        self._factory = client_factory
        self._cache: dict[str, tuple[float, Any]] = {}
        self._cache_lock = threading.Lock()

    def cached(self, name: str, produce: Callable[[], Any], ttl_s: float = CACHE_S) -> Any:
        """One answer per ``ttl_s`` however many pages poll (moto has one core)."""
        now = time.monotonic()
        with self._cache_lock:
            hit = self._cache.get(name)
            if hit is not None and now - hit[0] < ttl_s:
                return hit[1]
        value = produce()
        with self._cache_lock:
            self._cache[name] = (now, value)
        return value

    # -- plumbing -----------------------------------------------------------------

    @property
    def facts(self) -> Any:
        facts = self._cloud.facts
        if facts is None:
            raise LookupError("the local cloud is still starting")
        return facts

    def client(self, service: str) -> Any:
        if service not in self._clients and self._factory is not None:
            self._clients[service] = self._factory(service)
        if service not in self._clients:
            import boto3

            facts = self.facts
            session = boto3.session.Session(
                aws_access_key_id=LOCAL_CREDENTIALS["AWS_ACCESS_KEY_ID"],
                aws_secret_access_key=LOCAL_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
                aws_session_token=LOCAL_CREDENTIALS["AWS_SESSION_TOKEN"],
                region_name=facts.region,
            )
            self._clients[service] = session.client(  # type: ignore[call-overload]
                service, endpoint_url=facts.aws_endpoint_url
            )
        return self._clients[service]

    def table(self, logical: str) -> Any:
        from stratus.ddb import Table

        return Table(self.facts.tables[logical], self.client("dynamodb"))

    def _function_env(self) -> dict[str, str]:
        runtime = self._cloud.runtime
        name = self.facts.functions.get("platform")
        if runtime is None or not name:
            return {}
        return dict(runtime.function(name).environment)

    def _default_limit(self, scope: str) -> Decimal | None:
        from stratus.config import Settings

        setting = LIMIT_SETTINGS[scope]
        raw = self._function_env().get(f"STRATUS_{setting.upper()}")
        if raw is not None:
            return Decimal(raw) if raw.strip() else None
        default = Settings.model_fields[setting].default
        return None if default is None else Decimal(str(default))

    # -- endpoints ----------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        facts = self.facts
        fake = self._cloud.fake_model
        calls = fake.call_count() if fake is not None else 0
        logs = self._cloud.logs
        warning = ""
        if facts.fake_model:
            warning = (
                "Replies come from the OFFLINE FAKE MODEL, not a real model"
                + (f" ({calls} model calls so far)" if calls else "")
                + ". Set OPENAI_API_KEY (and OPENAI_BASE_URL) for a real one."
            )
        return {
            "stage": self._cloud.stage.name,
            "api_url": facts.api_url,
            "aws_endpoint_url": facts.aws_endpoint_url,
            "console_url": facts.console_url,
            "model_base_url": facts.model_base_url,
            "fake_model": bool(facts.fake_model),
            "fake_model_calls": calls,
            "offline_warning": warning,
            "log_lines": len(logs) if logs is not None else 0,
            "agents": known_agents(),
            "now": self._clock().isoformat(),
        }

    def agents(self, minutes: int = 30) -> dict[str, Any]:
        """Per agent: today's calls, tokens and cost (budget items), the last 7 days'
        cost, and per-minute requests, errors, latency and cost per task (CloudWatch)."""
        from stratus.gateway_stores.dynamo import DynamoBudgetStore

        now = self._clock()
        days = day_range(7, now)
        names = known_agents()
        report = cost_report(
            DynamoBudgetStore(self.table("budgets")), agents=names, days=days
        ).by_agent()
        today = cost_report(
            DynamoBudgetStore(self.table("budgets")), agents=names, days=days[-1:]
        ).by_agent()
        series = agent_series(self.client("cloudwatch"), now=now, minutes=minutes)
        agents = []
        for name in names:
            week = report.get(name, {})
            day = today.get(name, {})
            agents.append(
                {
                    "agent": name,
                    "calls_today": day.get("calls", 0),
                    "tokens_today": day.get("tokens", 0),
                    "cost_today_usd": float(Decimal(day.get("cost_usd", "0"))),
                    "cost_per_call_usd": float(Decimal(day.get("cost_per_call_usd", "0"))),
                    "models": day.get("models", []),
                    "daily_cost_usd": week.get("daily_cost_usd", [0.0] * len(days)),
                    "series": series.get("agents", {}).get(name, {}),
                }
            )
        return {
            "days": days,
            "minutes": series.get("minutes", []),
            "metric_names": series.get("metric_names", {}),
            "agents": agents,
        }

    def budgets(self) -> dict[str, Any]:
        """Budget burn of today's scopes: spent against the limit (pct None: no limit)."""
        now = self._clock()
        day, month = now.strftime("%Y-%m-%d"), now.strftime("%Y-%m")
        facts = self.facts
        scopes = []
        for item in self.table("budgets").scan_all():
            pk = str(item.get("pk", ""))
            parts = pk.split("#")
            if pk == f"GLOBAL#DAY#{day}":
                scope, label = "global_day", "all tenants"
            elif len(parts) == 4 and parts[0] == "AGENT" and parts[2:] == ["DAY", day]:
                scope, label = "agent_day", parts[1]
            elif len(parts) == 4 and parts[0] == "TENANT" and parts[2:] == ["DAY", day]:
                scope, label = "tenant_day", parts[1]
            elif len(parts) == 4 and parts[0] == "TENANT" and parts[2:] == ["MONTH", month]:
                scope, label = "tenant_month", parts[1]
            else:
                continue
            if scope.startswith("tenant") and label == facts.demo_tenant_id:
                label = f"demo ({label[:8]})"
            # A scope without a limit takes no reservation: its spend is its usage.
            used = sum(int(v) for k, v in item.items() if k.startswith("u#cost_nusd#"))
            spent = Decimal(max(int(item.get("spent", 0)), used)) / NANO
            committed = Decimal(int(item.get("committed", 0))) / NANO
            limit = (
                Decimal(int(item["limit_nusd"])) / NANO
                if "limit_nusd" in item
                else self._default_limit(scope)
            )
            pct = float(spent / limit * 100) if limit else None
            scopes.append(
                {
                    "scope": scope,
                    "name": label,
                    "key": pk,
                    "spent_usd": float(spent),
                    "reserved_usd": float(committed - spent),
                    "limit_usd": None if limit is None else float(limit),
                    "burn_pct": pct,
                }
            )
        order = list(LIMIT_SETTINGS)
        scopes.sort(key=lambda s: (order.index(str(s["scope"])), str(s["name"])))
        return {"day": day, "month": month, "scopes": scopes}

    def jobs(self) -> dict[str, Any]:
        """The newest jobs with their steps (the jobs table: ``JOB`` and ``STEP#`` items)."""
        jobs: dict[str, dict[str, Any]] = {}
        steps: dict[str, list[dict[str, Any]]] = {}
        for item in self.table("jobs").scan_all():
            job_id, sk = str(item.get("job_id", "")), str(item.get("sk", ""))
            if sk == "JOB":
                jobs[job_id] = item
            elif sk.startswith("STEP#"):
                steps.setdefault(job_id, []).append(
                    {
                        "name": sk.removeprefix("STEP#"),
                        "status": item.get("status", ""),
                        "cost_usd": _plain(item.get("cost_usd", 0)),
                        "model": item.get("model", ""),
                        "tokens": sum(
                            int(item.get(n, 0))
                            for n in ("input_tokens", "output_tokens", "reasoning_tokens")
                        ),
                        "updated_at": item.get("updated_at", ""),
                    }
                )
        rows = []
        counts: dict[str, int] = {}
        for job_id, job in jobs.items():
            status = str(job.get("status", ""))
            counts[status] = counts.get(status, 0) + 1
            metadata = _json_field(job.get("metadata"))
            rows.append(
                {
                    "job_id": job_id,
                    "agent": job.get("agent", ""),
                    "status": status,
                    "source": job.get("source", ""),
                    "cost_usd": _plain(job.get("cost_usd", 0)),
                    "attempts": _plain(job.get("attempts", 0)),
                    "created_at": job.get("created_at", ""),
                    "updated_at": job.get("updated_at", ""),
                    "correlation_id": job.get("correlation_id", ""),
                    "routed_from": metadata.get("routed_from", "")
                    if isinstance(metadata, dict)
                    else "",
                    "error": _plain(_json_field(job.get("error"))) or None,
                    "steps": sorted(steps.get(job_id, []), key=lambda s: s["updated_at"]),
                }
            )
        rows.sort(key=lambda r: str(r["created_at"]), reverse=True)
        return {"total": len(rows), "by_status": counts, "jobs": rows[:JOBS_SHOWN]}

    def sessions(self) -> dict[str, Any]:
        """The newest sessions: turns, messages, tokens and cost (their head items)."""
        rows = []
        for item in self.table("sessions").scan_all(filter="sk = :h", values={":h": "H"}):
            rows.append(
                {
                    "session_id": item.get("session_id", ""),
                    "agent": item.get("agent", ""),
                    "tenant_id": item.get("tenant_id", ""),
                    "turns": _plain(item.get("turns", 0)),
                    "messages": _plain(item.get("msg_count", 0)),
                    "tokens": sum(int(item.get(n, 0)) for n in ("in_tok", "out_tok", "reason_tok")),
                    "cost_usd": _plain(item.get("cost_usd", 0)),
                    "created_at": datetime.fromtimestamp(
                        int(item.get("created_ms", 0)) / 1000, UTC
                    ).isoformat(),
                }
            )
        rows.sort(key=lambda r: str(r["created_at"]), reverse=True)
        return {"total": len(rows), "sessions": rows[:SESSIONS_SHOWN]}

    def dlq(self) -> dict[str, Any]:
        """Every DLQ's depth and up to 10 of its messages with their ``stratus_reason``
        (received with a zero visibility timeout: peeking hides nothing)."""
        sqs = self.client("sqs")
        queues = []
        for name, url in sorted(self.facts.queue_urls.items()):
            if not name.endswith("-dlq"):
                continue
            attributes = sqs.get_queue_attributes(
                QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"]
            ).get("Attributes", {})
            depth = int(attributes.get("ApproximateNumberOfMessages", 0))
            messages = []
            if depth:
                got = sqs.receive_message(
                    QueueUrl=url,
                    MaxNumberOfMessages=10,
                    VisibilityTimeout=0,
                    MessageAttributeNames=["All"],
                    MessageSystemAttributeNames=["All"],
                ).get("Messages", [])
                for message in got:
                    attrs = {
                        k: v.get("StringValue", "")
                        for k, v in (message.get("MessageAttributes") or {}).items()
                    }
                    system = message.get("Attributes") or {}
                    messages.append(
                        {
                            "message_id": message["MessageId"],
                            "stratus_reason": attrs.get(
                                "stratus_reason", "max_receive_count_exceeded"
                            ),
                            "stratus_detail": attrs.get("stratus_detail", ""),
                            "correlation_id": attrs.get("correlation_id", ""),
                            "receive_count": int(system.get("ApproximateReceiveCount", 0)),
                            "sent_at": _epoch_ms(system.get("SentTimestamp")),
                            "body": str(message.get("Body", ""))[:300],
                        }
                    )
            queues.append({"queue": name, "url": url, "depth": depth, "messages": messages})
        return {
            "total": sum(q["depth"] for q in queues),
            "queues": queues,
        }

    def logs(
        self, correlation_id: str = "", limit: int = 200, after: int = 0, platform: bool = True
    ) -> dict[str, Any]:
        """The newest lines (``platform``: with Lambda's START/END/REPORT lines)."""
        if correlation_id and not CORRELATION_ID.match(correlation_id):
            raise BadRequest(
                "invalid_correlation_id",
                "correlation_id must match ^[A-Za-z0-9._:-]{1,128}$",
            )
        if not 1 <= limit <= 1000:
            raise BadRequest("invalid_limit", "limit must be 1-1000")
        buffer = self._cloud.logs
        lines = buffer.query(
            correlation_id=correlation_id, limit=limit, after=after, platform=platform
        )
        out = [
            {**{k: v for k, v in line.items() if k != "record"}, "line": line["line"][:4000]}
            for line in lines
        ]
        return {"correlation_id": correlation_id or None, "count": len(out), "lines": out}


def _epoch_ms(raw: Any) -> str:
    try:
        return datetime.fromtimestamp(int(raw) / 1000, UTC).isoformat()
    except (TypeError, ValueError):
        return ""
