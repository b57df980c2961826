"""Small, dependency-free summaries of timing samples."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any


def percentile(samples: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) with linear interpolation between ranks."""
    if not samples:
        raise ValueError("no samples")
    ordered = sorted(samples)
    if len(ordered) == 1:
        return ordered[0]
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summarize(samples: Sequence[float], *, keep_samples: bool = True) -> dict[str, Any]:
    """Median, p90, min, max and mean of samples (milliseconds), rounded for the report."""
    summary: dict[str, Any] = {
        "n": len(samples),
        "median": round(statistics.median(samples), 3),
        "p90": round(percentile(samples, 90), 3),
        "min": round(min(samples), 3),
        "max": round(max(samples), 3),
        "mean": round(statistics.fmean(samples), 3),
    }
    if keep_samples:
        summary["samples"] = [round(value, 3) for value in samples]
    return summary
