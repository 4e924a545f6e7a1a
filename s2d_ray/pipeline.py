"""`s2d run`: the whole loop, sample -> filter -> train -> eval, resumable stage by stage.

Sampling and evaluation skip ids already written; training is skipped when model/ was
trained for the same config. A stopped run continues where it was when run again.
"""

from __future__ import annotations

import time
from typing import Any

from s2d_ray import console
from s2d_ray.config import RunConfig


def run(cfg: RunConfig) -> dict[str, Any]:
    from s2d_ray.evaluation import evaluate, format_report
    from s2d_ray.outputs import OutputDir
    from s2d_ray.sampling import format_summary, sample
    from s2d_ray.training import format_result, train

    start = time.perf_counter()
    timings: dict[str, float] = {}

    def stage(name: str) -> None:
        console.say(f"\n=== s2d run: {name} ({time.perf_counter() - start:.0f}s elapsed) ===")

    stage("sample + filter")
    t = time.perf_counter()
    console.say(format_summary(sample(cfg)))
    timings["sample_s"] = time.perf_counter() - t
    stage("train")
    t = time.perf_counter()
    console.say(format_result(train(cfg)))
    timings["train_s"] = time.perf_counter() - t
    stage("eval")
    t = time.perf_counter()
    report = evaluate(cfg)
    timings["eval_s"] = time.perf_counter() - t
    if cfg.eval.broader is not None:
        from s2d_ray.evaluation.harness import broader

        stage("broader (lm-evaluation-harness)")
        t = time.perf_counter()
        report["harness"] = {k: v for k, v in broader(cfg).items() if k in ("settings", "tasks")}
        timings["broader_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - start
    out = OutputDir(cfg.output_dir)
    console.say("\n" + format_report(report))
    console.say(f"wall time: sample {timings['sample_s']:.0f}s, train {timings['train_s']:.0f}s, "
                f"eval {timings['eval_s']:.0f}s, total {timings['total_s']:.0f}s")
    console.say(f"outputs: distillation set {out.uri('distill')}\n         model {out.uri('model')}\n"
                f"         report {out.uri('report.md')} (.json, .png)")
    return report
