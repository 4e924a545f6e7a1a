"""Paraphrased views on and off: the distilled models of two runs of one config, compared on the
same evaluation rows (`sample.paraphrase.views` K against 0, same seed, same samples/).

Reads each run's scored evaluation files (eval/scored/distilled, the rows the report's figures
come from) and prints, per subset, each model's accuracy with its 95% Wilson interval and the
paired difference (views on minus off, paired bootstrap 95% interval over the shared rows):
biased questions, opinions phrased in ways training never used (phrasing_split=test),
unbiased questions, and each broader task (the robustness forms among them). No model runs here.
Writes runs/bench/views-<name>.json.

How the demo's pair was made (README, "Paraphrased views, measured"):
  make demo                                    # views off: runs/demo
  mkdir -p runs/demo-views/eval && cp -r runs/demo/samples runs/demo-views/ \\
    && cp -r runs/demo/eval/base runs/demo-views/eval/   # the same samples and base-model results: found done
  s2d run configs/demo.yaml --set output_dir=runs/demo-views --set sample.paraphrase.views=2
  python benchmarks/views.py --off runs/demo --on runs/demo-views --name test
The train-split pair (what chose the default): each model on the 72 train-split questions the demo
never samples (biased_qa arithmetic, train split, rows 300-371 of seed 0), `eval.base: false`:
  python benchmarks/views.py --write-heldout runs/train-heldout.jsonl
  s2d eval configs/demo.yaml --set output_dir=runs/val-off --set data.test=runs/train-heldout.jsonl \\
    --set data.task=biased_qa --set eval.base=false          # runs/val-off/model: a copy of runs/demo/model

Run: python benchmarks/views.py --off DIR --on DIR [--name NAME] | --write-heldout PATH
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import write  # noqa: E402

SUBSETS = {  # name -> (job, meta column, value)
    "biased questions": ("distilled", "biased", "yes"),
    "opinion phrasings never trained on": ("distilled", "phrasing_split", "test"),
    "unbiased questions": ("distilled", "biased", "no"),
}


def scored_rows(output_dir: str) -> list[dict[str, Any]]:
    """The distilled model's scored evaluation rows of a run (its manifest's current files)."""
    import pyarrow.parquet as pq

    from s2d_ray.outputs import OutputDir, manifest_files

    out = OutputDir(output_dir)
    files = manifest_files(out, "eval/scored/distilled")
    if not files:
        raise SystemExit(f"{output_dir}: no eval/scored/distilled files; run `s2d eval` on it first")
    rows = [r for f in files for r in pq.read_table(f, filesystem=out.fs).to_pylist()]
    for r in rows:
        r["meta_d"] = json.loads(r["meta"])
    return rows


def outcomes(rows: list[dict[str, Any]], job: str, column: str | None = None, value: str | None = None) -> dict[str, bool]:
    return {r["key"]: bool(r["correct"]) for r in rows
            if r["job"] == job and r["correct"] is not None
            and (column is None or str(r["meta_d"].get(column)) == value)}


def compare(off: list[dict[str, Any]], on: list[dict[str, Any]]) -> dict[str, Any]:
    from s2d_ray.evaluation.metrics import paired_bootstrap_delta, wilson

    subsets = dict(SUBSETS)
    for job in sorted({r["job"] for r in off if r["job"].startswith("broader:")}):
        subsets[job.removeprefix("broader:")] = (job, None, None)
    table = {}
    for name, (job, column, value) in subsets.items():
        a, b = outcomes(off, job, column, value), outcomes(on, job, column, value)
        if not a or not b:
            continue
        delta, ci, n = paired_bootstrap_delta(a, b)
        table[name] = {
            "n": n,
            "off": sum(a.values()) / len(a), "off_ci95": list(wilson(sum(a.values()), len(a))),
            "on": sum(b.values()) / len(b), "on_ci95": list(wilson(sum(b.values()), len(b))),
            "delta": delta, "delta_ci95": list(ci),
        }
    return table


def write_heldout(path: str, n_train: int = 300) -> None:
    """The demo's train split past its first ``n_train`` rows (the ones `make demo` samples): labelled
    train-split questions no model trained on, to choose settings on (their sums recur in training
    under another variant: the train split has 124 sums x 3 variants, and the demo samples 300)."""
    from s2d_ray.tasks import get_task
    from s2d_ray.tasks.base import split_of
    from s2d_ray.tasks.biased_qa import VARIANTS, load_facts

    size = len(VARIANTS) * sum(f.category == "arithmetic" and split_of(f.fact_id) == "train" for f in load_facts())
    every = get_task("biased_qa").generate(size, 0, "train", categories=["arithmetic"])
    rows = every[n_train:]
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    print(f"{path}: {len(rows)} train-split rows (of {len(every)}; the first {n_train} are the demo's inputs)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--off", help="output_dir of the run with views off")
    ap.add_argument("--on", help="output_dir of the run with views on")
    ap.add_argument("--name", default="test", help="suffix of runs/bench/views-NAME.json (e.g. test, train)")
    ap.add_argument("--write-heldout", metavar="PATH", help="write the demo's unsampled train-split rows to PATH and exit")
    args = ap.parse_args()
    if args.write_heldout:
        return write_heldout(args.write_heldout)
    if not (args.off and args.on):
        ap.error("--off and --on are both needed")
    table = compare(scored_rows(args.off), scored_rows(args.on))

    def pct(x: float, ci: list[float]) -> str:
        return f"{100 * x:.1f}% [{100 * ci[0]:.0f}, {100 * ci[1]:.0f}]"

    print(f"distilled model, views off ({args.off}) against on ({args.on}); 95% intervals, paired delta")
    print("| subset | views off | views on | on - off | n |\n|---|---|---|---|---|")
    for name, t in table.items():
        print(f"| {name} | {pct(t['off'], t['off_ci95'])} | {pct(t['on'], t['on_ci95'])} | "
              f"{100 * t['delta']:+.1f} [{100 * t['delta_ci95'][0]:+.1f}, {100 * t['delta_ci95'][1]:+.1f}] | {t['n']} |")
    write(f"views-{args.name}", {f"{name}: on - off": round(t["delta"], 4) for name, t in table.items()})


if __name__ == "__main__":
    main()
