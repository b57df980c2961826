"""The stage's CloudWatch dashboard ``Stratus-<stage>``: every agent, queue and workflow.

Built from the same plans as the rest of the stack (the agent specs, the job queues
and workflows of :class:`infra.constructs.jobs.StratusJobs`), so a new agent, queue or
workflow shows up without an edit here. Rows, top to bottom:

* the API: 4XX / 5XX errors and latency (p50/p90/p99);
* budgets: burn (``BudgetBurnPct``, percent of the day's limit) of ``global_day`` and
  each agent's ``agent_day``;
* per agent (``Agent <name>``): requests and error rate; latency p50/p90/p99 (every
  execution model: ``LatencyMs``); cost per task (average) and per hour (sum, USD);
  tokens in/out/cached/reasoning; cache and ledger hits per 100 tasks, and fallbacks;
* per queue (``Queue <name>``): depth, age of the oldest message, its DLQ's depth;
* per workflow (``Workflow <agent>``): executions started, succeeded, failed, and
  ``WorkflowsWaitingApproval`` (workflows that started waiting for a human approval).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from aws_cdk import Duration
from aws_cdk import aws_apigateway as apigateway
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_sqs as sqs
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from infra.config import StageConfig
from infra.constructs.operator_alarms import PERIOD, task_metric
from stratus.agents import AgentSpec

WIDTH = 8  # three graphs per row (the dashboard grid is 24 wide)
HEIGHT = 6


def dashboard_name(stage: StageConfig) -> str:
    return f"Stratus-{stage.name}"


def _graph(
    title: str,
    left: Sequence[cloudwatch.IMetric],
    right: Sequence[cloudwatch.IMetric] | None = None,
    *,
    width: int = WIDTH,
) -> cloudwatch.GraphWidget:
    return cloudwatch.GraphWidget(
        title=title, left=list(left), right=list(right or []), width=width, height=HEIGHT
    )


def _usd(
    metric: cloudwatch.Metric, key: str, label: str, period: Duration
) -> cloudwatch.MathExpression:
    """``metric`` (micro-USD) in USD; ``key``: its id, unique within the graph."""
    return cloudwatch.MathExpression(
        expression=f"{key} / 1000000", using_metrics={key: metric}, label=label, period=period
    )


def _per_100(hits: str, agent: str) -> cloudwatch.MathExpression:
    key = hits.lower()
    return cloudwatch.MathExpression(
        expression=f"IF(requests > 0, 100 * {key} / requests, 0)",
        using_metrics={
            key: task_metric(hits, agent),
            "requests": task_metric("Requests", agent),
        },
        label=f"{hits} per 100 tasks",
        period=PERIOD,
    )


class StratusDashboard(Construct):
    """``dashboard``: one row per concern (see the module's docstring)."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        stage: StageConfig,
        agents: Mapping[str, AgentSpec],
        queues: Mapping[str, sqs.IQueue],
        dlqs: Mapping[str, sqs.IQueue],
        workflows: Mapping[str, sfn.IStateMachine],
        api: apigateway.RestApi,
    ) -> None:
        super().__init__(scope, construct_id)
        self.dashboard = cloudwatch.Dashboard(
            self,
            "Dashboard",
            dashboard_name=dashboard_name(stage),
            default_interval=Duration.hours(3),
        )
        self._row(cloudwatch.TextWidget(markdown=f"# Stratus {stage.name}", width=24, height=1))
        self._row(*self._api(api))
        self._row(self._budgets(sorted(agents)))
        for agent in sorted(agents):
            self._row(cloudwatch.TextWidget(markdown=f"## Agent {agent}", width=24, height=1))
            self._row(*self._agent(agent))
        for name in sorted(queues):
            self._row(*self._queue(name, queues[name], dlqs.get(name)))
        for agent in sorted(workflows):
            self._row(self._workflow(agent, workflows[agent]))

    def _row(self, *widgets: cloudwatch.IWidget) -> None:
        self.dashboard.add_widgets(*widgets)

    def _api(self, api: apigateway.RestApi) -> list[cloudwatch.IWidget]:
        return [
            _graph(
                "API 4XX / 5XX",
                [
                    api.metric_client_error(period=PERIOD, statistic="Sum", label="4XX"),
                    api.metric_server_error(period=PERIOD, statistic="Sum", label="5XX"),
                ],
                width=12,
            ),
            _graph(
                "API latency",
                [
                    api.metric_latency(period=PERIOD, statistic=stat, label=stat)
                    for stat in ("p50", "p90", "p99")
                ],
                width=12,
            ),
        ]

    def _budgets(self, agents: list[str]) -> cloudwatch.IWidget:
        burns = [
            task_metric("BudgetBurnPct", statistic="Maximum", scope="global_day").with_(
                label="global_day"
            )
        ] + [
            task_metric("BudgetBurnPct", agent, statistic="Maximum", scope="agent_day").with_(
                label=f"agent_day {agent}"
            )
            for agent in agents
        ]
        return _graph("Budget burn (% of the day's limit)", burns, width=24)

    def _agent(self, agent: str) -> list[cloudwatch.IWidget]:
        error_rate = cloudwatch.MathExpression(
            expression="IF(requests > 0, 100 * errors / requests, 0)",
            using_metrics={
                "errors": task_metric("Errors", agent),
                "requests": task_metric("Requests", agent),
            },
            label="error rate (%)",
            period=PERIOD,
        )
        hour = Duration.hours(1)
        cost = task_metric("CostMicroUSD", agent)
        return [
            _graph(
                f"{agent}: requests and error rate",
                [
                    task_metric("Requests", agent).with_(label="requests"),
                    task_metric("Errors", agent).with_(label="errors"),
                ],
                [error_rate],
            ),
            _graph(
                f"{agent}: latency p50/p90/p99",
                [
                    task_metric("LatencyMs", agent, statistic=stat).with_(label=stat)
                    for stat in ("p50", "p90", "p99")
                ],
            ),
            _graph(
                f"{agent}: cost per task and per hour (USD)",
                [_usd(cost.with_(statistic="Average"), "task", "per task", PERIOD)],
                [_usd(cost.with_(statistic="Sum", period=hour), "hour", "per hour", hour)],
            ),
            _graph(
                f"{agent}: tokens in/out/cached/reasoning",
                [
                    task_metric(name, agent).with_(label=label)
                    for name, label in (
                        ("InputTokens", "in"),
                        ("OutputTokens", "out"),
                        ("CachedTokens", "cached"),
                        ("ReasoningTokens", "reasoning"),
                    )
                ],
            ),
            _graph(
                f"{agent}: cache and ledger hit rates, fallbacks",
                [_per_100("CacheHits", agent), _per_100("LedgerHits", agent)],
                [task_metric("Fallbacks", agent).with_(label="fallbacks")],
            ),
        ]

    def _queue(
        self, name: str, queue: sqs.IQueue, dlq: sqs.IQueue | None
    ) -> list[cloudwatch.IWidget]:
        widgets: list[cloudwatch.IWidget] = [
            _graph(
                f"Queue {name}: depth",
                [queue.metric_approximate_number_of_messages_visible(period=PERIOD)],
            ),
            _graph(
                f"Queue {name}: age of oldest message",
                [queue.metric_approximate_age_of_oldest_message(period=PERIOD)],
            ),
        ]
        if dlq is not None:
            widgets.append(
                _graph(
                    f"Queue {name}: DLQ depth",
                    [dlq.metric_approximate_number_of_messages_visible(period=PERIOD)],
                )
            )
        return widgets

    def _workflow(self, agent: str, machine: sfn.IStateMachine) -> cloudwatch.IWidget:
        return _graph(
            f"Workflow {agent}: started, succeeded, failed, waiting for approval",
            [
                machine.metric_started(period=PERIOD, statistic="Sum", label="started"),
                machine.metric_succeeded(period=PERIOD, statistic="Sum", label="succeeded"),
                machine.metric_failed(period=PERIOD, statistic="Sum", label="failed"),
                task_metric("WorkflowsWaitingApproval", agent).with_(label="waiting for approval"),
            ],
            width=24,
        )
