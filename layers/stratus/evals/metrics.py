"""Eval scores as CloudWatch metrics: ``EvalScore`` (0-100) and ``EvalPassRate`` (0-1).

Namespace ``Stratus`` (:data:`stratus.observability.NAMESPACE`), dimensions ``agent``
and ``release``: what the release gate's alarms and a pre-traffic hook read. Two
adapters of one small port: :class:`CloudWatchSink` (``put_metric_data``, for
``stratus eval --stack/--version`` on a laptop or in CI) and :class:`EmfSink`
(Powertools' embedded metric format on stdout, for a Lambda such as the
pre-traffic hook, where CloudWatch Logs turns it into metrics for free).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from stratus.observability import NAMESPACE

SCORE_METRIC = "EvalScore"
PASS_RATE_METRIC = "EvalPassRate"  # noqa: S105 - a metric name


@dataclass(frozen=True)
class EvalMetrics:
    """One agent's numbers of one run."""

    agent: str
    release: str
    score: float  # 0-100
    pass_rate: float  # 0-1

    @classmethod
    def of(cls, verdict: Any) -> EvalMetrics:
        """From a :class:`stratus.evals.gate.AgentVerdict`."""
        return cls(verdict.agent, verdict.release, float(verdict.score), float(verdict.pass_rate))


class MetricSink(Protocol):
    def publish(self, metrics: Sequence[EvalMetrics]) -> None: ...


def _dimensions(item: EvalMetrics) -> list[dict[str, str]]:
    return [{"Name": "agent", "Value": item.agent}, {"Name": "release", "Value": item.release}]


class CloudWatchSink:
    """``PutMetricData`` with a boto3 CloudWatch client: two data points per agent, one
    call per 1000 data points (one call for any realistic run)."""

    def __init__(self, client: Any, namespace: str = NAMESPACE) -> None:
        self._client = client
        self._namespace = namespace

    def publish(self, metrics: Sequence[EvalMetrics]) -> None:
        data = []
        for item in metrics:
            data.append(
                {
                    "MetricName": SCORE_METRIC,
                    "Dimensions": _dimensions(item),
                    "Value": item.score,
                    "Unit": "None",
                }
            )
            data.append(
                {
                    "MetricName": PASS_RATE_METRIC,
                    "Dimensions": _dimensions(item),
                    "Value": item.pass_rate,
                    "Unit": "None",
                }
            )
        for start in range(0, len(data), 1000):
            self._client.put_metric_data(
                Namespace=self._namespace, MetricData=data[start : start + 1000]
            )


class EmfSink:
    """Powertools EMF (``single_metric``: each agent's dimensions flushed on their own)."""

    def __init__(self, namespace: str = NAMESPACE) -> None:
        self._namespace = namespace

    def publish(self, metrics: Sequence[EvalMetrics]) -> None:
        from aws_lambda_powertools.metrics import MetricUnit, single_metric

        for item in metrics:
            for name, value in ((SCORE_METRIC, item.score), (PASS_RATE_METRIC, item.pass_rate)):
                with single_metric(
                    name=name, unit=MetricUnit.NoUnit, value=value, namespace=self._namespace
                ) as metric:
                    metric.add_dimension(name="agent", value=item.agent)
                    metric.add_dimension(name="release", value=item.release)


def publish(verdicts: Sequence[Any], sink: MetricSink) -> list[EvalMetrics]:
    """Publish every agent verdict's score and pass rate; returns what was sent."""
    metrics = [EvalMetrics.of(v) for v in verdicts]
    if metrics:
        sink.publish(metrics)
    return metrics
