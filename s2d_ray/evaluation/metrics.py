"""Accuracy with intervals, and per-system summaries of scored result rows."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any


def wilson(correct: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score 95% interval of a proportion."""
    if n == 0:
        return (0.0, 0.0)
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # At p = 0 (p = 1) the lower (upper) bound is exactly p; in floats it can land a hair inside
    # (60 of 60: 0.9999999999999999), which put the proportion outside its own interval.
    return (0.0 if correct == 0 else max(0.0, centre - half), 1.0 if correct == n else min(1.0, centre + half))


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


NO_ANSWER = "(no answer)"
CONSTANT_SHARE = 0.9  # a system giving one answer to more than this share of inputs is flagged


def _stratified(labels: list[str], outcomes: dict[str, list[bool]], reps: int, seed: int) -> tuple[float, tuple[float, float]]:
    """Balanced accuracy (mean recall over gold labels) and its 95% interval: each label's
    recall resampled within that label (a stratified bootstrap, drawn as binomials)."""
    import numpy as np

    present = [label for label in labels if outcomes.get(label)]
    recalls = [sum(outcomes[label]) / len(outcomes[label]) for label in present]
    rng = np.random.default_rng(seed)
    draws = np.mean([rng.binomial(len(outcomes[label]), r, size=reps) / len(outcomes[label])
                     for label, r in zip(present, recalls)], axis=0)
    stats = np.sort(draws)
    return float(np.mean(recalls)), (float(stats[int(0.025 * reps)]), float(stats[int(0.975 * reps) - 1]))


def label_summary(rows: list[dict[str, Any]], labels: tuple[str, ...], reps: int = 2000, seed: int = 0) -> dict[str, Any] | None:
    """Per-label truth of one system on a closed answer set, from scored rows (keys: status,
    correct, gold, predicted): gold and predicted label counts, the confusion table, the
    majority-class baseline, balanced accuracy with its interval, and the answer it gives to
    more than 90% of inputs, if any. None without labelled rows."""
    scored = [r for r in rows if r["status"] != "rejected" and r["correct"] is not None and r.get("gold") is not None]
    if not scored:
        return None
    order = list(labels) + sorted({r["gold"] for r in scored} - set(labels))
    gold = Counter(r["gold"] for r in scored)
    predicted = Counter(r.get("predicted") or NO_ANSWER for r in scored)
    confusion = {g: {p: 0 for p in [*order, NO_ANSWER]} for g in order if gold[g]}
    for r in scored:
        confusion[r["gold"]][r.get("predicted") or NO_ANSWER] += 1
    outcomes: dict[str, list[bool]] = {}
    for r in scored:
        outcomes.setdefault(r["gold"], []).append(bool(r["correct"]))
    balanced, ci = _stratified(order, outcomes, reps, seed)
    top, top_n = predicted.most_common(1)[0]
    majority, majority_n = gold.most_common(1)[0]
    n = len(scored)
    return {
        "n": n,
        "gold": {label: gold[label] for label in order if gold[label]},
        "predicted": {label: predicted[label] for label in [*order, NO_ANSWER] if predicted[label]},
        "confusion": confusion,
        "majority_baseline": {"label": majority, "accuracy": majority_n / n},
        "balanced_accuracy": balanced,
        "balanced_accuracy_ci95": list(ci),
        "constant": {"answer": top, "n": top_n, "share": top_n / n} if top_n / n > CONSTANT_SHARE else None,
    }


def paired_balanced_delta(a: dict[str, tuple[str, bool]], b: dict[str, tuple[str, bool]], reps: int = 2000,
                          seed: int = 0) -> dict[str, Any] | None:
    """Balanced accuracy of ``b`` minus ``a`` on their shared ids (id -> (gold label, correct)),
    with a paired bootstrap interval: within each gold label, the four cells of paired outcomes
    drawn from a multinomial."""
    import numpy as np

    ids = sorted(set(a) & set(b))
    if not ids:
        return None
    cells: dict[str, list[int]] = {}
    for i in ids:
        c = cells.setdefault(a[i][0], [0, 0, 0, 0])  # both right, only a, only b, neither
        c[{(True, True): 0, (True, False): 1, (False, True): 2, (False, False): 3}[(a[i][1], b[i][1])]] += 1
    rng = np.random.default_rng(seed)
    deltas = np.zeros(reps)
    point = 0.0
    for c in cells.values():
        n = sum(c)
        point += (c[2] - c[1]) / n
        draws = rng.multinomial(n, np.array(c) / n, size=reps)
        deltas += (draws[:, 2] - draws[:, 1]) / n
    deltas, point = np.sort(deltas / len(cells)), point / len(cells)
    return {"delta": point, "delta_ci95": [float(deltas[int(0.025 * reps)]), float(deltas[int(0.975 * reps) - 1])],
            "n": len(ids)}


def one_label_warning(what: str, counts: dict[str, int]) -> str | None:
    """A warning when one label is more than 90% of ``counts`` (None otherwise)."""
    total = sum(counts.values())
    if not total:
        return None
    label, n = max(counts.items(), key=lambda kv: kv[1])
    if n / total <= CONSTANT_SHARE:
        return None
    return f"{what}: {n} of {total} ({n / total:.0%}) are {label!r}"
