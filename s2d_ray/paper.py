"""`s2d paper` (`make paper`): the paper's methods on the embedded model, each with the paper's
two baselines, in one table (runs/paper/table.md, .json, .png).

For each config: its own run (``s2d run``: System 1, System 2, distilled System 1, broader
deltas, in the config's ``output_dir``), then the baselines as overrides of the same config, in
``<output_dir>-<baseline>``: "Distill System 1" (``sample.method=direct`` on the method's
System 1 prompts, ``sample.system1_of``: the model's own answers, self-consistency filtered)
and "no filter" (``sample.filter.kind=none``: the System 2 answers unfiltered; it starts from a
copy of the method's samples/, as an engine-free filter does not change what is sampled).
Baseline runs evaluate only their distilled model (``eval.base=false``). Every run resumes, so a
stopped ``make paper`` continues where it was.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from s2d_ray import console
from s2d_ray.outputs import OutputDir, read_manifest

if TYPE_CHECKING:
    from s2d_ray.config import RunConfig

BASELINES: dict[str, tuple[str, list[str]]] = {  # overrides; {method}: the config's sample.method
    "distill_system1": ("Distill System 1 (baseline)", ["sample.method=direct", "sample.system1_of={method}"]),
    "no_filter": ("Distilled, no filter (baseline)", ["sample.filter.kind=none"]),
}
SYSTEMS = {"system1": "System 1", "system2": "System 2", "distilled": "Distilled System 1"}
METRICS = ("accuracy", "accuracy_ci95", "mean_generated_tokens", "n", "swap_inconsistent",
           "balanced_accuracy", "balanced_accuracy_ci95")


def _metrics(system: dict[str, Any]) -> dict[str, Any]:
    """One system's cell figures; on a closed answer set also the answer it gives to more than
    90% of the test inputs (None if none), so the table cannot show a constant answer as a score."""
    m = {k: system.get(k) for k in METRICS}
    if labels := system.get("labels"):
        m["constant"] = labels["constant"]
        m["majority_baseline"] = labels["majority_baseline"]
    return m


def _entry(name: str, report: dict[str, Any], baselines: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """One method's row group of the table, from its report and its baselines' reports."""
    systems = {key: _metrics(report["systems"][key]) for key in SYSTEMS if key in report["systems"]}
    for key, base in baselines.items():
        systems[key] = _metrics(base["systems"]["distilled"])
    warnings = [*report.get("warnings", []),
                *(f"{BASELINES[key][0]}: {w}" for key, base in baselines.items() for w in base.get("warnings", []))]
    return {
        "config": name, "task": report["task"], "method": report["method"], "model": report["model"],
        "systems": systems,
        "subsets": {k: {s: v[s]["accuracy"] for s in SYSTEMS if s in v} for k, v in report.get("subsets", {}).items()},
        "majority_at": report.get("majority_at") or {},
        "broader": {t: {k: b[k] for k in ("base", "distilled", "delta", "delta_ci95", "n")}
                    for t, b in report.get("broader", {}).items()},
        "distillation_set": {k: report.get("distillation_set", {}).get(k) for k in ("kept", "valid_inputs", "n_samples")},
        "warnings": warnings,
    }


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def _cell(m: dict[str, Any] | None) -> str:
    if not m or m.get("accuracy") is None:
        return "-"
    lo, hi = m["accuracy_ci95"]
    cell = f"{_pct(m['accuracy'])} [{_pct(lo)}, {_pct(hi)}], {m['mean_generated_tokens']:.0f} tok"
    if m.get("balanced_accuracy") is not None:
        lo, hi = m["balanced_accuracy_ci95"]
        cell += f", balanced {_pct(m['balanced_accuracy'])} [{_pct(lo)}, {_pct(hi)}]"
    if c := m.get("constant"):
        cell += f", {c['share']:.0%} {c['answer']!r}"
    if sw := m.get("swap_inconsistent"):
        cell += f", {_pct(sw['fraction'])}% inconsistent"
    return cell


def labels() -> dict[str, str]:
    return {**SYSTEMS, **{k: label for k, (label, _) in BASELINES.items()}}


def format_table(entries: list[dict[str, Any]]) -> str:
    """Markdown: per method, accuracy % [95% CI] and mean generated tokens of every system; on a
    closed answer set also balanced accuracy [95% CI] and a constant answer's share; under the
    table each method's majority-class baseline and warnings."""
    names = labels()
    lines = ["| task (method) | " + " | ".join(names.values()) + " |", "|---|" + "---|" * len(names)]
    for e in entries:
        lines.append(f"| {e['task']} ({e['method']}) | " + " | ".join(_cell(e["systems"].get(k)) for k in names) + " |")
    lines.append("")
    for e in entries:
        extra = [f"- warning: {w}" for w in e.get("warnings", [])]
        if baseline := next((m["majority_baseline"] for m in e["systems"].values() if m.get("majority_baseline")), None):
            extra.append(f"- majority-class baseline (always {baseline['label']!r}): {_pct(baseline['accuracy'])}%")
        if e["subsets"]:
            extra += [f"- subset {k}: " + ", ".join(f"{SYSTEMS[s]} {_pct(a)}%" for s, a in v.items()) for k, v in e["subsets"].items()]
        for system, by_k in e["majority_at"].items():
            extra.append(f"- majority@k, {SYSTEMS.get(system, system)}: " + ", ".join(
                f"k={k} {_pct(m['accuracy'])}%" for k, m in by_k.items()))
        for task, b in e["broader"].items():
            extra.append(f"- broader {task}: base {_pct(b['base'])}% -> distilled {_pct(b['distilled'])}% "
                         f"({100 * b['delta']:+.1f} pts [{100 * b['delta_ci95'][0]:+.1f}, {100 * b['delta_ci95'][1]:+.1f}], n={b['n']})")
        if extra:
            ds = e["distillation_set"]
            lines += [f"**{e['task']} ({e['method']}, {e['model']})**: distillation set {ds['kept']} of "
                      f"{ds['valid_inputs']} inputs, {ds['n_samples']} samples each", "", *extra, ""]
    return "\n".join(lines)


def _tick(name: str, m: dict[str, Any]) -> str:
    tick = f"{name.replace(' (baseline)', ' (b.)')}\n{m['mean_generated_tokens']:.0f} tokens"
    if c := m.get("constant"):  # a bar that is one answer's share of the test set says so
        tick += f", {c['share']:.0%} {c['answer']!r}"
    return tick


def plot(entries: list[dict[str, Any]]) -> bytes:
    """PNG: one panel per method, accuracy (95% CI) of each system, its mean generated tokens in the label."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = labels()
    fig, axes = plt.subplots(1, len(entries), figsize=(max(7.0, 4.2 * len(entries)), 5.0), squeeze=False, sharey=True)
    for ax, e in zip(axes[0], entries):
        keys = [k for k in names if (e["systems"].get(k) or {}).get("accuracy") is not None]
        acc = [e["systems"][k]["accuracy"] * 100 for k in keys]
        err = [[a - e["systems"][k]["accuracy_ci95"][0] * 100 for a, k in zip(acc, keys)],
               [e["systems"][k]["accuracy_ci95"][1] * 100 - a for a, k in zip(acc, keys)]]
        bars = ax.bar(range(len(keys)), acc, yerr=err, capsize=3, color=[f"C{list(names).index(k)}" for k in keys])
        for bar, a, up in zip(bars, acc, err[1]):  # the value above its interval
            ax.text(bar.get_x() + bar.get_width() / 2, a + up + 1, f"{a:.0f}", ha="center", va="bottom", fontsize=8)
        ax.set_xticks(range(len(keys)), [_tick(names[k], e["systems"][k]) for k in keys], rotation=35, ha="right", fontsize=8)
        ax.set_title(f"{e['method']} on {e['task']}", fontsize=10)
        ax.set_ylim(0, 100)
    axes[0][0].set_ylabel("accuracy % (95% CI)")
    fig.suptitle(f"System 2 distillation, {entries[0]['model']}\naccuracy and mean generated tokens "
                 "((b.): the paper's baselines)", fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def share_samples(src: RunConfig, dst: RunConfig) -> bool:
    """Copy ``src``'s finished samples/ into ``dst``'s output_dir when ``dst`` would sample
    exactly those (the same sample stage hash) and has none yet; whether it did."""
    from s2d_ray.stage import sample_spec

    if sample_spec(src).config_hash != sample_spec(dst).config_hash:
        return False
    s, d = OutputDir(src.output_dir), OutputDir(dst.output_dir)
    if not (read_manifest(s, "samples") or {}).get("complete") or d.exists("samples"):
        return False
    d.copy_from(s, "samples")
    return True


def paper(configs: list[str], out_dir: str, sets: list[str]) -> list[dict[str, Any]]:
    """Run every config and its baselines (resumable) and write ``out_dir``/table.{md,json,png}."""
    from s2d_ray.config import load_config
    from s2d_ray.pipeline import run

    entries = []
    for path in configs:
        cfg = load_config(path, sets)
        console.say(f"\n##### s2d paper: {path} ({cfg.sample.method} on {cfg.task_name}) -> {cfg.output_dir}")
        report = run(cfg)
        baselines = {}
        for key, (label, overrides) in BASELINES.items():
            console.say(f"\n##### s2d paper: {path}, {label}")
            overrides = [o.format(method=cfg.sample.method) for o in overrides]
            base_cfg = load_config(path, [*sets, f"output_dir={cfg.output_dir}-{key}", *overrides, "eval.base=false"])
            if share_samples(cfg, base_cfg):
                console.say(f"s2d paper: {base_cfg.output_dir}/samples copied from {cfg.output_dir} (same samples, another filter)")
            baselines[key] = run(base_cfg)
        entries.append(_entry(Path(path).stem, report, baselines))
    out = OutputDir(out_dir)
    out.write_text(json.dumps(entries, indent=2), "table.json")
    out.write_text(format_table(entries), "table.md")
    with out.fs.open_output_stream(out.path("table.png")) as f:
        f.write(plot(entries))
    console.say("\n" + format_table(entries) + f"\ntable: {out.uri('table.md')} (.json, .png)")
    return entries
