"""The adaptive mode measured: accuracy against mean generated tokens per request of a served
model at s2d_mode system1, system2 and auto over a range of thresholds, the threshold chosen on
the train split.

Every request goes through `s2d serve` (Ray Serve + vLLM) with the raw input only; the model's
prompt recipe (s2d_prompt.json) asks it as evaluation did. Per input, one greedy System 1
answer (with its `s2d.confidence`) and one System 2 answer (`s2d_mode: system2`, the recipe's
program). Auto at threshold t answers System 1's answer when its confidence >= t and System 2's
otherwise, spending System 1's tokens plus, on a fallback, System 2's: the work `s2d_mode: auto`
does (a greedy System 1 answer, then the program), so every threshold's point comes from the
same two passes. The threshold is the one with the best train accuracy (ties: fewer tokens);
one real `s2d_mode: auto` pass on the test split at that threshold checks its computed point
(System 2 samples, so the two differ by sampling noise only).

Run: python benchmarks/adaptive.py [CONFIG] [--n-train 100] [--n-test 200]   (CONFIG: a run's config,
default configs/demo.yaml: its data.train/data.test built-in task sources, data.seed, and the trained
output_dir/model, which must exist). Not part of `make bench`: it needs a trained model and, on this
CPU, about 20 minutes.
Writes runs/bench/adaptive.json (figures) and runs/bench/adaptive.png (the curve).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import subprocess
import sys
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import served  # noqa: E402  (s2d serve started and stopped as the tests do)
from results import BENCH_DIR, ROOT, write  # noqa: E402

PORT = 8398
URL = f"http://127.0.0.1:{PORT}"
THRESHOLDS = [round(0.05 * i, 2) for i in range(21)]
CONCURRENCY = 16


def start_server(model: str, threshold: float, run) -> subprocess.Popen:
    """`s2d serve` on the run's model, its System 2 sampled as the run sampled (method, samples,
    temperature, top_p, max_tokens per step, engine)."""
    cfg = BENCH_DIR / "adaptive-serve.json"
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    s = run.sample
    cfg.write_text(json.dumps({
        "model_name": "m", "adaptive_threshold": threshold, "cpu_threads": 2, "num_cpus": 1, "max_ongoing_requests": 32,
        "system2_samples": s.n_samples, "system2_temperature": s.temperature, "system2_top_p": s.top_p,
        "system2_max_tokens": s.max_tokens, "engine": s.engine.model_dump()}))
    return served.start(model, PORT, BENCH_DIR / "adaptive-serve.log", "--config", str(cfg))


async def ask(rows: list[dict], mode: str) -> list[dict]:
    """Each row's raw input at ``mode``: its text, parsed answer, confidence, path and tokens."""
    gate = asyncio.Semaphore(CONCURRENCY)
    async with httpx.AsyncClient(base_url=URL, timeout=900) as http:
        async def one(row: dict) -> dict:
            body = {"model": "m", "messages": [{"role": "user", "content": row["input"]}], "s2d_mode": mode}
            if mode == "system1":
                body["temperature"] = 0
            async with gate:
                r = await http.post("/v1/chat/completions", json=body)
            r.raise_for_status()
            out = r.json()
            return {"text": out["choices"][0]["message"]["content"], **out["s2d"],
                    "tokens": out["usage"]["completion_tokens"]}
        return await asyncio.gather(*(one(r) for r in rows))


def curve(rows: list[dict], s1: list[dict], s2: list[dict], is_correct) -> dict[str, dict[str, float]]:
    """Accuracy, mean generated tokens and System 2 share of system1, system2 and auto@t."""
    n = len(rows)
    right1 = [is_correct(a["text"], r) for a, r in zip(s1, rows)]
    right2 = [a["answer"] is not None and is_correct(a["answer"], r) for a, r in zip(s2, rows)]
    points = {"system1": {"accuracy": sum(right1) / n, "mean_generated_tokens": sum(a["tokens"] for a in s1) / n,
                          "system2_share": 0.0},
              "system2": {"accuracy": sum(right2) / n, "mean_generated_tokens": sum(a["tokens"] for a in s2) / n,
                          "system2_share": 1.0}}
    for t in THRESHOLDS:
        back = [a["confidence"] < t for a in s1]
        points[f"auto@{t:.2f}"] = {
            "accuracy": sum(r2 if b else r1 for b, r1, r2 in zip(back, right1, right2)) / n,
            "mean_generated_tokens": sum(a["tokens"] + (b2["tokens"] if b else 0) for a, b2, b in zip(s1, s2, back)) / n,
            "system2_share": sum(back) / n}
    return points


def plot(train: dict, test: dict, chosen: str, real: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for split, pts, style in (("train", train, "o--"), ("test", test, "o-")):
        autos = [pts[k] for k in pts if k.startswith("auto@")]
        ax.plot([p["mean_generated_tokens"] for p in autos], [100 * p["accuracy"] for p in autos], style, ms=3,
                label=f"auto, thresholds 0..1 ({split})", alpha=0.8)
    for name, marker in (("system1", "s"), ("system2", "^")):
        ax.plot(test[name]["mean_generated_tokens"], 100 * test[name]["accuracy"], marker, ms=9, label=f"{name} (test)")
    ax.plot(test[chosen]["mean_generated_tokens"], 100 * test[chosen]["accuracy"], "*", ms=14, label=f"{chosen}, chosen on train (test)")
    ax.plot(real["mean_generated_tokens"], 100 * real["accuracy"], "x", ms=10, mew=2, label=f"{chosen}: real auto pass (test)")
    ax.set_xlabel("mean generated tokens per request")
    ax.set_ylabel("accuracy %")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    from s2d_ray.config import load_config
    from s2d_ray.tasks import get_task, parse_task_source

    ap = argparse.ArgumentParser()
    ap.add_argument("config", nargs="?", default=str(ROOT / "configs" / "demo.yaml"))
    ap.add_argument("--n-train", type=int, default=100)
    ap.add_argument("--n-test", type=int, default=200)
    args = ap.parse_args()
    cfg = load_config(args.config)
    args.model = str(Path(cfg.output_dir) / "model")
    (name, train_params), (_, test_params) = parse_task_source(cfg.data.train), parse_task_source(cfg.data.test)
    task = get_task(name)
    args.task = cfg.data.test.removeprefix("task:")
    train_rows = task.generate(args.n_train, cfg.data.seed, "train", **train_params)
    test_rows = task.generate(args.n_test, cfg.data.seed, "test", **test_params)
    proc = start_server(args.model, 0.0, cfg)
    try:
        passes = {split: {mode: asyncio.run(ask(rows, mode)) for mode in ("system1", "system2")}
                  for split, rows in (("train", train_rows), ("test", test_rows))}
    finally:
        served.stop(proc, signal.SIGTERM)
    train = curve(train_rows, passes["train"]["system1"], passes["train"]["system2"], task.is_correct)
    test = curve(test_rows, passes["test"]["system1"], passes["test"]["system2"], task.is_correct)
    autos = [k for k in train if k.startswith("auto@")]
    chosen = max(autos, key=lambda k: (train[k]["accuracy"], -train[k]["mean_generated_tokens"]))
    threshold = float(chosen.split("@")[1])
    proc = start_server(args.model, threshold, cfg)
    try:
        real_rows = asyncio.run(ask(test_rows, "auto"))
    finally:
        served.stop(proc, signal.SIGTERM)
    real = {"accuracy": sum((a["answer"] is not None and task.is_correct(a["answer"], r)) if a["path"] == "system2"
                            else task.is_correct(a["text"], r) for a, r in zip(real_rows, test_rows)) / len(test_rows),
            "mean_generated_tokens": sum(a["tokens"] for a in real_rows) / len(test_rows),
            "system2_share": sum(a["path"] == "system2" for a in real_rows) / len(test_rows)}
    print(f"model {args.model}, task {args.task}; train n={len(train_rows)}, test n={len(test_rows)}")
    print("| point | train accuracy | train tokens | test accuracy | test tokens | test System 2 share |")
    print("|---|---|---|---|---|---|")
    for k in ["system1", "system2", *autos]:
        mark = " (chosen)" if k == chosen else ""
        print(f"| {k}{mark} | {100 * train[k]['accuracy']:.1f}% | {train[k]['mean_generated_tokens']:.1f} | "
              f"{100 * test[k]['accuracy']:.1f}% | {test[k]['mean_generated_tokens']:.1f} | {100 * test[k]['system2_share']:.0f}% |")
    print(f"| real auto pass at {threshold:.2f} | | | {100 * real['accuracy']:.1f}% | {real['mean_generated_tokens']:.1f} | "
          f"{100 * real['system2_share']:.0f}% |")
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    (BENCH_DIR / "adaptive-points.json").write_text(json.dumps({"train": train, "test": test, "chosen": chosen, "real_auto": real},
                                                               indent=2))
    plot(train, test, chosen, real, BENCH_DIR / "adaptive.png",
         f"s2d serve {Path(args.model).parent.name}/{Path(args.model).name}, {args.task}: "
         f"adaptive System 1 -> System 2 (threshold {threshold:.2f} chosen on train)")
    write("adaptive", {"adaptive_threshold": threshold,
                       "auto_over_system1_accuracy": test[chosen]["accuracy"] - test["system1"]["accuracy"],
                       "auto_over_system2_tokens": test[chosen]["mean_generated_tokens"] / max(test["system2"]["mean_generated_tokens"], 1e-9)})


if __name__ == "__main__":
    main()
