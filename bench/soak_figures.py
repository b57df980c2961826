"""The chaos soak's figures: computed from the tables, the DLQs and the fake model's log."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterator
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from infra.local.chaos import marker_of

if TYPE_CHECKING:
    from bench.soak import Soak

TERMINAL = {"succeeded", "failed", "cancelled"}


# -- the figures ----------------------------------------------------------------------


def _nano(usd: Any) -> int:
    return int((Decimal(str(usd or 0)) * 1_000_000_000).to_integral_value())


def compute_figures(soak: Soak, items: dict[str, dict[str, Any]], quiet: bool) -> dict[str, Any]:
    """Every figure of the report, from the tables, the DLQs and the fake model's log."""
    tenant, run = soak.tenant, soak.run

    def prefixed(table: str, attr: str, prefix: str) -> Iterator[dict[str, Any]]:
        return soak.scan(
            table,
            FilterExpression=f"begins_with({attr}, :p)",
            ExpressionAttributeValues={":p": {"S": prefix}},
        )

    steps: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for item in prefixed("jobs", "sk", "STEP#"):
        steps[item["job_id"]].append(item)
    # The call ledger: one entry per paid model step (CALL#<t>#job#<id>#<step>#<hash>).
    ledger: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    for item in prefixed("ledger", "pk", f"CALL#{tenant}#job#"):
        _, _, _, job_id, step, _ = str(item["pk"]).split("#", 5)
        cost = json.loads(item.get("completion") or "{}").get("cost_usd")
        ledger[job_id][step].append(_nano(cost))
    usage = {
        str(item["pk"]).rsplit("#", 1)[1]: item
        for item in prefixed("usage", "pk", f"SCOPE#{tenant}#job#")
    }
    budgets = [i for i in soak.scan("budgets") if "committed" in i]
    open_items = [i for i in budgets if int(i.get("committed", 0)) != int(i.get("spent", 0))]
    open_nusd = sum(int(i["committed"]) - int(i.get("spent", 0)) for i in open_items)
    task_spent = {
        str(i["pk"]).rsplit("#", 1)[1]: int(i.get("spent", 0))
        for i in budgets
        if str(i["pk"]).startswith(f"TASK#{tenant}#job#")
    }
    # The provider's side: what the fake model answered, by the job marker in the prompt.
    answered: Counter[str] = Counter()
    statuses: Counter[str] = Counter()
    for request in soak.cloud.fake_model.requests:
        if not request.path.endswith("/completions"):
            continue
        statuses[str(request.status)] += 1
        marker = marker_of(json.dumps(request.body).encode())
        if marker and request.status == 200:
            answered[marker] += 1
    ingest_dlq = soak.dlq_messages("ingest-dlq")
    dead_ids = {m["MessageId"] for m in ingest_dlq}
    dead_ids |= {
        m.get("MessageAttributes", {}).get("stratus_source_message_id", {}).get("StringValue")
        for m in ingest_dlq
    }
    job_dlqs = sum(
        len(soak.dlq_messages(name))
        for name in soak.facts.queue_urls
        if name.startswith("agent-") and name.endswith("-dlq")
    )
    window = {k.marker for k in soak.chaos.kills if k.phase == "after_answer"}
    # A batch the runtime ended at its timeout is a crash the harness did not aim: if it
    # fell between the provider's answer and the ledger write, it is the same window.
    timed_out = set(soak.timed_out) - window

    f: Counter[str] = Counter()
    failed: Counter[str] = Counter()
    problems: list[str] = []
    expected = set()
    for job in soak.jobs:
        if not job.submitted or job.job_id is None:
            f["not_submitted"] += 1
            continue
        expected.add(job.job_id)
        if job.job_id not in items:
            if job.source == "sqs" and dead_ids & set(job.message_ids):
                f["dead_lettered"] += 1
            else:
                f["lost"] += 1
                problems.append(f"lost {job.marker} {job.job_id}")
            continue
        item = items[job.job_id]
        status = item["status"]
        f[status] += 1
        if status not in TERMINAL:
            f["stuck"] += 1
            problems.append(f"stuck {job.marker} {job.job_id} {status}")
        if status == "failed":
            failed[str((item.get("error") or {}).get("code", "unknown"))] += 1
        if int(item.get("attempts", 0)) > 1:
            f["claimed_more_than_once"] += 1
        paid_steps = ledger.get(job.job_id, {})
        extra = answered[job.marker] - len(paid_steps)
        if extra > 0:
            if job.marker in window:
                f["extra_calls_window"] += extra
            elif job.marker in timed_out:
                f["extra_calls_timeout"] += extra
            else:
                f["extra_calls_outside"] += extra
                problems.append(f"paid {extra} extra call(s) outside the window: {job.marker}")
        ledger_nusd = sum(costs[0] for costs in paid_steps.values())
        step_nusd = sum(_nano(s.get("cost_usd")) for s in steps.get(job.job_id, []))
        row = usage.get(job.job_id, {})
        twice = _nano(item.get("cost_usd")) != step_nusd or int(row.get("calls", 0)) > len(
            paid_steps
        )
        twice = twice or int(row.get("cost_nusd", 0)) > ledger_nusd
        if twice:
            f["billed_twice"] += 1
            problems.append(f"billed twice: {job.marker} {job.job_id}")
        over = task_spent.get(job.job_id, 0) - ledger_nusd
        if over > 0:
            in_window = job.marker in window or job.marker in timed_out
            f["budget_over_window" if in_window else "budget_over_outside"] += 1
    extra_jobs = [
        j
        for j, item in items.items()
        if j not in expected and json.loads(item.get("metadata") or "{}").get("soak") == run
    ]
    kills = Counter(k.phase for k in soak.chaos.kills)
    c = soak.counts
    counted = "not_submitted succeeded failed cancelled lost stuck claimed_more_than_once"
    figures: dict[str, Any] = {k: f[k] for k in (counted + " billed_twice").split()}
    figures |= {
        "submitted": len(expected) + f["not_submitted"],
        "submitted_http": c["submitted_http"],
        "submitted_sqs": c["submitted_sqs"],
        "failed_by_code": dict(sorted(failed.items())),
        "dead_lettered_at_ingest": f["dead_lettered"],
        "second_jobs_from_redelivery": len(extra_jobs),
        "duplicates_submitted": c["duplicates_http"] + c["duplicates_sqs"],
        "http_resubmits": c["http_resubmits"],
        "job_dlq_messages": job_dlqs,
        "kills_before_answer": kills["before_answer"],
        "kills_after_answer": kills["after_answer"],
        "kills_missed": len(soak.chaos.missed) + len(soak.chaos.plan),
        "faults_injected": {k: c[f"fault_{k}"] for k in ("429", "500", "timeout")},
        "model_answers_by_status": dict(sorted(statuses.items())),
        "provider_calls": sum(answered.values()),
        "extra_provider_calls_outside_window": f["extra_calls_outside"],
        "extra_provider_calls_in_crash_window": f["extra_calls_window"],
        "worker_batches_timed_out_jobs": len(timed_out),
        "extra_provider_calls_after_runtime_timeout": f["extra_calls_timeout"],
        "budget_spend_beyond_ledger_jobs_outside_window": f["budget_over_outside"],
        "budget_spend_beyond_ledger_jobs_in_window": f["budget_over_window"],
        "reservations_open": len(open_items),
        "reservations_open_usd": str(Decimal(open_nusd) / 10**9),
        "queues_quiet": quiet,
    }
    zeros = ("lost", "stuck", "reservations_open", "billed_twice", "second_jobs_from_redelivery")
    figures["zeros_hold"] = all(figures[z] == 0 for z in zeros) and (
        figures["extra_provider_calls_outside_window"] == 0
    )
    return {
        "figures": figures,
        "zeros_hold": figures["zeros_hold"],
        "timings": {k: round(v, 1) for k, v in soak.timings.items()},
        "problems": problems[:50],
        "errors": soak.errors[:20],
        "open_reservations": [str(i["pk"]) for i in open_items][:20],
    }
