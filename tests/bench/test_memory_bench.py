"""The memory bench section, quick path: it seeds, recalls for one customer with one
``QueryVectors`` per recall, stays within the recall token budget, and renders."""

from __future__ import annotations

from bench import memory


def test_the_memory_section_measures_and_renders() -> None:
    data = memory.measure(queries=2, sizes=(200,), log=lambda _: None)
    [row] = data["rows"]
    assert row["memories"] == 200 and row["customers"] == 20
    assert row["s3vectors_requests_per_recall"] == 1
    assert 0 < row["recalled"]["max"] <= data["top_k"]
    assert 0 < row["prompt_tokens_added"]["max"] <= data["recall_token_budget"]
    assert row["cost_usd_per_turn"] > 0
    text = "\n".join(memory.render(data))
    assert text.startswith(memory.HEADING) and "| 200 | 20 |" in text
