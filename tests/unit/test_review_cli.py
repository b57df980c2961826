"""``stratus review``'s interactive walk, and the local EMF -> CloudWatch conversion."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from infra import review_cli
from infra.local.emf_forwarder import emf_data


class FakeApi(review_cli.ReviewApi):
    def __init__(self, pending: list[dict[str, Any]], taken: set[str] | None = None) -> None:
        super().__init__("http://api.test", "sk-test")
        self._pending = pending
        self.taken = taken or set()
        self.grades: list[tuple[str, float, str]] = []

    def pending(self, agent: str | None) -> list[dict[str, Any]]:
        return [r for r in self._pending if agent is None or r["agent"] == agent]

    def grade(self, review_id: str, score: float, comment: str) -> Any:
        if review_id in self.taken:
            raise review_cli.ApiRefused(409, {"error": {"code": "already_reviewed"}})
        self.grades.append((review_id, score, comment))
        total = sum(g[1] for g in self.grades)
        return {
            "review_id": review_id,
            "score": score,
            "human_score": {
                "agent": "triage",
                "release": "1.0.0",
                "score": total / len(self.grades),
                "reviewed": len(self.grades),
            },
        }


def review(n: int, agent: str = "triage") -> dict[str, Any]:
    return {
        "review_id": f"rv_{n}",
        "agent": agent,
        "release": "1.0.0",
        "model": "gpt-5-mini",
        "kind": "job",
        "source_id": f"job-{n}",
        "created_at": "2026-12-01T00:00:00.000+00:00",
        "status": "pending",
        "input": f"question {n}",
        "output": f"answer {n}",
        "input_truncated": False,
        "output_truncated": n == 2,
    }


def answers(*replies: str) -> Any:
    queue = list(replies)
    return lambda prompt: queue.pop(0)


def test_the_walk_grades_skips_retries_and_quits() -> None:
    api = FakeApi([review(1), review(2), review(3), review(4)])
    out = io.StringIO()
    code = review_cli.walk(
        api,
        None,
        # 1: a bad answer, then 0.9 with a comment; 2: skipped; 3: 0.2; 4: quit.
        ask=answers("great", "0.9", "fine", "s", "0.2", "", "q"),
        out=out,
    )
    assert code == 0
    assert api.grades == [("rv_1", 0.9, "fine"), ("rv_3", 0.2, "")]
    text = out.getvalue()
    assert "a number from 0 to 1" in text and "output [truncated]" in text
    assert "HumanScore triage 1.0.0: 0.550 (2 reviewed)" in text
    assert "2 graded, 1 skipped" in text


def test_a_review_graded_meanwhile_is_skipped_and_eof_quits() -> None:
    api = FakeApi([review(1), review(2)], taken={"rv_1"})
    out = io.StringIO()

    def ask(prompt: str) -> str:
        if api.grades or "comment" in prompt:
            raise EOFError
        return "1"

    assert review_cli.walk(api, None, ask=ask, out=out) == 0
    assert "graded by someone else meanwhile" in out.getvalue()
    assert api.grades == [("rv_2", 1.0, "")]
    assert review_cli.walk(FakeApi([]), None, ask=ask, out=out) == 0
    assert "no pending reviews" in out.getvalue()


def test_an_api_that_is_not_http_is_refused() -> None:
    with pytest.raises(review_cli.Unreachable):
        review_cli.ReviewApi("file:///etc/passwd", "k")


def test_an_emf_document_becomes_metric_data() -> None:
    line = json.dumps(
        {
            "_aws": {
                "Timestamp": 1_800_000_000_000,
                "CloudWatchMetrics": [
                    {
                        "Namespace": "Stratus",
                        "Dimensions": [["agent", "release"]],
                        "Metrics": [{"Name": "HumanScore", "Unit": "NoUnit"}],
                    }
                ],
            },
            "agent": "triage",
            "release": "1.0.0",
            "HumanScore": [0.5, 1],
        }
    )
    data = list(emf_data(json.loads(line)))
    assert [(ns, d["MetricName"], d["Value"], d["Unit"]) for ns, d in data] == [
        ("Stratus", "HumanScore", 0.5, "None"),
        ("Stratus", "HumanScore", 1.0, "None"),
    ]
    assert data[0][1]["Dimensions"] == [
        {"Name": "agent", "Value": "triage"},
        {"Name": "release", "Value": "1.0.0"},
    ]
    assert list(emf_data({"message": "not a metric"})) == []
