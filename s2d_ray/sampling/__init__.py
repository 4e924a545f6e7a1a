"""Stage 1-3 of System 2 distillation: sample a System 2 program N times per input, keep
self-consistent answers, drop the reasoning. ``sample(cfg)`` is what `s2d sample` runs."""

from __future__ import annotations

import json
from typing import Any

from s2d_ray.config import RunConfig
from s2d_ray.datasets import write_derived
from s2d_ray.evaluation.metrics import one_label_warning
from s2d_ray.inputs import read_inputs
from s2d_ray.outputs import OutputDir
from s2d_ray.runtime import init_ray
from s2d_ray.sampling.views import paraphrase, write_views
from s2d_ray.stage import refilter, run_stage, sample_spec


def sample(cfg: RunConfig) -> dict[str, Any]:
    """Run sampling + filtering; write samples/, distill/, rejected/ (and paraphrases/ with
    ``sample.paraphrase.views``); return the summary."""
    init_ray(cfg.locations("output_dir", "data.train", "model"))
    out = OutputDir(cfg.output_dir)
    spec = sample_spec(cfg)
    ds = read_inputs(cfg.data.train, cfg.data.n_train, cfg.data.seed, "train")
    stats = run_stage(ds, {"sample": spec}, cfg.sample.actors, out, "samples",
                      title=f"sample ({cfg.sample.method} x{cfg.sample.n_samples})")
    decide = refilter(spec)  # an engine-free filter decides here, so changing it does not sample again
    counts = write_derived(out, spec.config_hash, cfg.task_spec, cfg.sample.filter.balance, decide)
    rewording = paraphrase(cfg, out, spec.config_hash, decide) if cfg.sample.paraphrase.views else None
    views = write_views(cfg, out)
    total = sum(counts.get(s, 0) for s in ("kept", "dropped", "rejected"))
    n_kept, n_rejected = counts.get("kept", 0) - counts.get("capped", 0), counts.get("rejected", 0)
    valid = total - n_rejected
    summary = {
        "model": cfg.model,
        "method": spec.method,
        "n_samples": spec.n_samples,
        "config_hash": spec.config_hash,
        "inputs": total,
        "valid_inputs": valid,
        "kept": n_kept,
        "kept_fraction": round(n_kept / valid, 4) if valid else 0.0,
        "rejected": n_rejected,
        **({"capped": counts["capped"], "caps": counts.get("caps", {})} if counts.get("capped") else {}),
        "this_run": stats.as_dict(),
    }
    if views is not None:
        summary["paraphrase"] = {"views_per_input": cfg.sample.paraphrase.views, **views,
                                 **({"this_run": rewording.as_dict()} if rewording else {})}
    if counts.get("kept_labels"):  # a closed answer set: what the distilled model will learn to say
        summary["kept_target_labels"] = dict(sorted(counts["kept_labels"].items(), key=lambda kv: -kv[1]))
    if counts.get("kept_with_answer"):  # ground truth of kept targets: for the report only, never for distillation
        right, labelled = counts["kept_correct"], counts["kept_with_answer"]
        summary["kept_target_accuracy"] = {"correct": right, "kept_with_answer": labelled, "accuracy": round(right / labelled, 4)}
    out.write_text(json.dumps(summary, indent=2), "samples_summary.json")
    return summary


def format_summary(summary: dict[str, Any]) -> str:
    run = summary["this_run"]
    lines = [
        f"sampling: {summary['method']} x{summary['n_samples']} on {summary['model']} (config {summary['config_hash']})",
        f"  inputs read {summary['inputs']} (valid {summary['valid_inputs']}, rejected {summary['rejected']}); "
        f"this run processed {run['rows']}, skipped {run['skipped_done']} already done",
        f"  kept {summary['kept']} ({summary['kept_fraction']:.0%} of valid inputs); samples this run {run['samples']}",
        f"  agreement histogram: {run['agreement']}",
        f"  generated tokens {run['generated_tokens']}, {run['tokens_per_s']} tok/s (engine busy {run['busy_s']:.1f}s, wall {run['wall_s']:.1f}s)",
    ]
    if run["reasons"]:
        lines.append(f"  drop/reject reasons: {run['reasons']}")
    if summary.get("capped"):
        lines.append(f"  sample.filter.balance left {summary['capped']} kept inputs out of distill/ (at most per label: {summary['caps']})")
    if p := summary.get("paraphrase"):
        outcomes = p["rewordings"]
        asked = sum(outcomes.values())
        lines.append(f"  paraphrased views: {p['views']} rows added to distill/ ({p['views_per_input']} rewordings asked per kept "
                     f"input; {outcomes.get('accepted', 0)} of {asked} accepted"
                     + (f"; dropped: {', '.join(f'{k} {v}' for k, v in outcomes.items() if k != 'accepted')}" if asked else "") + ")")
    if labels := summary.get("kept_target_labels"):
        lines.append(f"  kept targets per label: {labels}")
        if warning := one_label_warning("the distillation set's kept targets", labels):
            lines.append(f"  WARNING: {warning}")
    if acc := summary.get("kept_target_accuracy"):
        lines.append(f"  kept-target accuracy (labels used for this report only): {acc['correct']}/{acc['kept_with_answer']} = {acc['accuracy']:.0%}")
    return "\n".join(lines)
