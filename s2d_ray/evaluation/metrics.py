"""Accuracy with intervals, and per-system summaries of scored result rows."""

from __future__ import annotations

import math
from typing import Any


def wilson(correct: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score 95% interval of a proportion."""
    if n == 0:
        return (0.0, 0.0)
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def paired_bootstrap_delta(a: dict[str, bool], b: dict[str, bool], reps: int = 2000, seed: int = 0) -> tuple[float, tuple[float, float], int]:
    """Accuracy of ``b`` minus ``a`` on their shared ids, with a paired bootstrap 95% interval.

    Resampling n pairs of binary outcomes with replacement is drawing the four cell counts
    (both right, only b, only a, neither) from a multinomial, so the bootstrap costs ``reps``
    draws whatever n is (the same distribution as resampling the pairs one by one)."""
    import numpy as np

    ids = set(a) & set(b)
    if not ids:
        return 0.0, (0.0, 0.0), 0
    n = len(ids)
    only_b = sum(b[i] and not a[i] for i in ids)
    only_a = sum(a[i] and not b[i] for i in ids)
    cells = np.array([only_b, only_a, n - only_a - only_b]) / n
    draws = np.random.default_rng(seed).multinomial(n, cells, size=reps)
    stats = np.sort((draws[:, 0] - draws[:, 1]) / n)
    return (only_b - only_a) / n, (float(stats[int(0.025 * reps)]), float(stats[int(0.975 * reps) - 1])), n


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Metrics of one system over scored rows (keys: status, correct|None, generated_tokens).

    Cost is generated tokens, the paper's measure. Time per system is not reported: its rows
    share the engine's running batch with other systems' rows, so their latency and tokens/s
    measure the mix (each stage's engine throughput is in the report's ``stages``)."""
    answered = [r for r in rows if r["status"] != "rejected"]
    labelled = [r for r in answered if r["correct"] is not None]
    correct = sum(bool(r["correct"]) for r in labelled)
    tokens = sum(r["generated_tokens"] for r in answered)
    n = len(labelled)
    return {
        "n": n,
        "correct": correct,
        "accuracy": correct / n if n else None,
        "accuracy_ci95": list(wilson(correct, n)) if n else None,
        "mean_generated_tokens": tokens / len(answered) if answered else None,
        "rejected": len(rows) - len(answered),
    }


_SWAPPED = {"A": "B", "B": "A", "tie": "tie"}


def swap_inconsistency(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Position consistency of a pairwise judge, the paper's "% inconsistent under swap": rows
    carrying ``pair_id`` and ``order`` (ab|ba) in ``meta_d`` and their ``verdict``. A pair judged
    in both orders is inconsistent when the two verdicts do not name the same response (a tie in
    both orders is consistent; a missing verdict is not). None if no pair has both orders."""
    pairs: dict[str, dict[str, str | None]] = {}
    for r in rows:
        meta = r.get("meta_d") or {}
        if r["status"] != "rejected" and meta.get("pair_id") is not None and meta.get("order") in ("ab", "ba"):
            pairs.setdefault(str(meta["pair_id"]), {})[meta["order"]] = r.get("verdict")
    both = [p for p in pairs.values() if len(p) == 2]
    if not both:
        return None
    bad = sum(p["ab"] is None or _SWAPPED.get(p["ba"] or "") != p["ab"] for p in both)
    return {"pairs": len(both), "inconsistent": bad, "fraction": bad / len(both), "ci95": list(wilson(bad, len(both)))}
