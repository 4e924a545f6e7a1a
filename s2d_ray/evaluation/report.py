"""report.json (CONTRACT.md shape), report.md (tables to paste) and report.png."""

from __future__ import annotations

import io
import json
import textwrap
from typing import Any

from s2d_ray.evaluation.metrics import CONSTANT_SHARE
from s2d_ray.outputs import OutputDir

LABELS = {"system1": "System 1 (base)", "system2": "System 2 (base)", "distilled": "Distilled System 1"}


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _ci(ci: list[float] | None) -> str:
    return "-" if not ci else f"[{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"


def _num(x: float | None, fmt: str = "{:.1f}") -> str:
    return "-" if x is None else fmt.format(x)


def systems_table(systems: dict[str, dict[str, Any]]) -> list[str]:
    swap = any(isinstance(m, dict) and m.get("swap_inconsistent") for m in systems.values())
    balanced = any(isinstance(m, dict) and m.get("balanced_accuracy") is not None for m in systems.values())
    lines = ["| system | accuracy | 95% CI | n | mean generated tokens |" + (" balanced accuracy [95% CI] |" if balanced else "")
             + (" inconsistent under swap |" if swap else ""),
             "|---|---|---|---|---|" + ("---|" if balanced else "") + ("---|" if swap else "")]
    for key, label in LABELS.items():
        m = systems.get(key)
        if m:
            row = (f"| {label} | {_pct(m['accuracy'])} | {_ci(m['accuracy_ci95'])} | {m['n']} | "
                   f"{_num(m['mean_generated_tokens'])} |")
            if balanced:
                row += (f" {_pct(m['balanced_accuracy'])} {_ci(m['balanced_accuracy_ci95'])} |"
                        if m.get("balanced_accuracy") is not None else " - |")
            if swap:
                sw = m.get("swap_inconsistent")
                row += f" {_pct(sw['fraction'])} of {sw['pairs']} pairs |" if sw else " - |"
            lines.append(row)
    return lines


def labels_section(report: dict[str, Any]) -> list[str]:
    """Closed answer sets: the gold labels, each system's answers per label and its confusion
    table, the majority-class baseline, and the paired delta on balanced accuracy."""
    systems = {k: m["labels"] for k, m in report["systems"].items() if m.get("labels")}
    if not systems:
        return []
    first = next(iter(systems.values()))
    gold, n = first["gold"], first["n"]
    answers = list(dict.fromkeys([*gold, *(p for s in systems.values() for p in s["predicted"])]))
    lines = ["### Labels", "",
             f"Test set: " + ", ".join(f"{label} {k} ({k / n:.0%})" for label, k in gold.items())
             + f"; majority-class baseline {_pct(first['majority_baseline']['accuracy'])} "
               f"(always {first['majority_baseline']['label']!r}).", "",
             "| system | " + " | ".join(f"answered {a}" for a in answers) + " |", "|---|" + "---|" * len(answers)]
    for key, labels in systems.items():
        lines.append(f"| {LABELS[key]} | " + " | ".join(str(labels["predicted"].get(a, 0)) for a in answers) + " |")
    lines.append("")
    for key, labels in systems.items():
        cols = [c for c in answers if any(row.get(c) for row in labels["confusion"].values())]
        lines += [f"{LABELS[key]}, confusion (rows: gold label, columns: its answer):", "",
                  "| gold \\ answer | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
        lines += [f"| {g} | " + " | ".join(str(row.get(c, 0)) for c in cols) + " |" for g, row in labels["confusion"].items()]
        lines.append("")
    if d := report.get("balanced_delta"):
        lines += [f"Distilled System 1 - System 1, balanced accuracy: {100 * d['delta']:+.1f} points "
                  f"[{100 * d['delta_ci95'][0]:+.1f}, {100 * d['delta_ci95'][1]:+.1f}] (paired bootstrap within labels, n={d['n']})", ""]
    return lines


def format_report(report: dict[str, Any]) -> str:
    """The Markdown report: headline table, subsets, broader performance."""
    lines = [f"## System 2 distillation: {report['method']} on {report['task']} ({report['model']})", ""]
    if ds := report.get("distillation_set"):
        acc = ds.get("kept_target_accuracy", {})
        kept_labels = ds.get("kept_target_labels")
        lines += [f"Distillation set: {ds['kept']} of {ds['valid_inputs']} inputs kept ({_pct(ds['kept_fraction'])}), "
                  f"n_samples={ds['n_samples']}" + (f"; kept targets correct {_pct(acc.get('accuracy'))}" if acc else "")
                  + ("; kept targets per label: " + ", ".join(f"{k} {v}" for k, v in kept_labels.items()) if kept_labels else ""), ""]
    if tr := report.get("training"):
        lines += [f"Training: {tr['finetune']} ZeRO-{tr['zero_stage']}, {tr['examples']} examples, {tr['steps']} steps, "
                  f"loss {_num(tr['first_loss'], '{:.3f}')} -> {_num(tr['last_loss'], '{:.3f}')}", ""]
    lines += [f"**Warning:** {w}." for w in report.get("warnings", [])] + ([""] if report.get("warnings") else [])
    lines += ["### All test inputs", "", *systems_table(report["systems"]), ""]
    lines += labels_section(report)
    for name, systems in report.get("subsets", {}).items():
        lines += [f"### Subset: {name}", "", *systems_table(systems), ""]
        if d := systems.get("delta"):
            lines += [f"Distilled System 1 - System 1 on these inputs: {100 * d['delta']:+.1f} points "
                      f"[{100 * d['delta_ci95'][0]:+.1f}, {100 * d['delta_ci95'][1]:+.1f}] (paired bootstrap, n={d['n']})", ""]
    if mk := report.get("majority_at"):
        ks = list(next(iter(mk.values())))
        lines += ["### Majority@k (the majority answer of k samples at the sampling temperature)", "",
                  "| system | " + " | ".join(f"k={k}" for k in ks) + " |", "|---|" + "---|" * len(ks)]
        for key, label in LABELS.items():
            if key in mk:
                lines.append(f"| {label} | " + " | ".join(
                    f"{_pct(m['accuracy'])} {_ci(m['accuracy_ci95'])}, {_num(m['mean_generated_tokens'])} tok"
                    for m in (mk[key][k] for k in ks)) + " |")
        lines.append("")
    if report.get("broader"):
        lines += ["### Broader performance (base System 1 vs distilled System 1, same inputs)", "",
                  "| task | base | distilled | delta | 95% CI of delta | n |", "|---|---|---|---|---|---|"]
        for task, b in report["broader"].items():
            lines.append(f"| {task} | {_pct(b['base'])} | {_pct(b['distilled'])} | {100 * b['delta']:+.1f} pts | "
                         f"[{100 * b['delta_ci95'][0]:+.1f}, {100 * b['delta_ci95'][1]:+.1f}] | {b['n']} |")
        lines.append("")
    if harness := report.get("harness"):
        lines += format_harness(harness["tasks"], harness["settings"])
    if stages := report.get("stages"):
        lines += ["Engine throughput while busy: " + ", ".join(
            f"{name} {st['tokens_per_s']:.0f} tokens/s ({st['generated_tokens']} tokens, {st['busy_s']:.0f} s)"
            for name, st in stages.items() if st.get("busy_s")), ""]
    return "\n".join(lines)


def format_harness(tasks: dict[str, dict[str, Any]], settings: dict[str, Any]) -> list[str]:
    """The lm-evaluation-harness table: each task's score for base and distilled models on the
    same documents, the paired delta and its interval."""
    lines = [f"### Broader performance on standard benchmarks (lm-evaluation-harness {settings['lm_eval']}, "
             f"{settings['num_fewshot']}-shot, base vs distilled on the same documents)", "",
             "| task | metric | base | distilled | delta | 95% CI of delta | n | best constant choice | most frequent choice, base / distilled |",
             "|---|---|---|---|---|---|---|---|---|"]
    warnings = []
    for task, t in tasks.items():
        const, top = t.get("constant_choice"), t.get("top_pick")
        shape = (f" {_pct(const['score'])} (choice {const['choice']}) | {_share(top['base'])} / {_share(top['distilled'])} |"
                 if const else " - | - |")
        lines.append(f"| {task} | {t['metric']} | {_pct(t['base'])} | {_pct(t['distilled'])} | {100 * t['delta']:+.1f} pts | "
                     f"[{100 * t['delta_ci95'][0]:+.1f}, {100 * t['delta_ci95'][1]:+.1f}] | {t['n']} |{shape}")
        if flat := [f"the {which} model picks choice {top[which]['choice']} on {100 * top[which]['share']:.0f}% of documents"
                    for which in ("base", "distilled") if top and top[which]["share"] > CONSTANT_SHARE]:
            warnings.append(f"- warning: {task}: {', '.join(flat)}; a score there is mostly that choice's share of the gold answers")
    if warnings:
        lines += ["", *warnings]
    return [*lines, ""]


def _share(pick: dict[str, Any]) -> str:
    return f"{100 * pick['share']:.0f}% choice {pick['choice']}"


def _delta_bars(ax: Any, y: list[Any], rows: list[dict[str, Any]]) -> None:
    """Horizontal bars of ``delta`` (points) with their 95% intervals, red below zero."""
    deltas = [100 * r["delta"] for r in rows]
    errs = [[100 * (r["delta"] - r["delta_ci95"][0]) for r in rows], [100 * (r["delta_ci95"][1] - r["delta"]) for r in rows]]
    ax.barh(y, deltas, xerr=errs, capsize=4, color=["tab:red" if d < 0 else "tab:green" for d in deltas])
    ax.axvline(0, color="black", linewidth=0.8)


def plot_harness(tasks: dict[str, dict[str, Any]], title: str) -> bytes:
    """PNG: each harness task's base and distilled scores, and the paired delta with its interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(tasks)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 0.45 * len(names) + 1.8), sharey=True)
    y = list(range(len(names)))
    ax1.barh([i + 0.2 for i in y], [100 * tasks[n]["base"] for n in names], height=0.4, label="base")
    ax1.barh([i - 0.2 for i in y], [100 * tasks[n]["distilled"] for n in names], height=0.4, label="distilled")
    ax1.set_yticks(y, [n.removeprefix("bigbench:") for n in names])
    ax1.set_xlabel("score (%)")
    ax1.set_xlim(0, 100)
    ax1.legend(loc="lower right")
    _delta_bars(ax2, y, [tasks[n] for n in names])
    ax2.set_xlabel("distilled - base (points, 95% CI)")
    ax1.invert_yaxis()
    fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def _wrap_task(source: str) -> str:
    """A task source as a short multi-line label: "biased_qa?categories=a,b" -> "biased_qa\ncategories: a, b"."""
    name, _, query = source.partition("?")
    parts = [f"{k}: {v.replace(',', ', ')}" for k, _, v in (p.partition("=") for p in query.split("&") if p)]
    return "\n".join([name, *(textwrap.fill(p, 28) for p in parts)])


def plot(report: dict[str, Any]) -> bytes:
    """PNG: accuracy vs mean generated tokens per system; broader-performance deltas."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    name = report.get("headline")
    headline = report["subsets"].get(name, report["systems"]) if name else report["systems"]
    for key, label in LABELS.items():
        m = headline.get(key)
        if not m or m["accuracy"] is None:
            continue
        lo, hi = m["accuracy_ci95"]
        ax1.errorbar(m["mean_generated_tokens"], m["accuracy"], yerr=[[m["accuracy"] - lo], [hi - m["accuracy"]]],
                     fmt="o", capsize=4, label=label)
    ax1.set_xscale("log")
    ax1.xaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    ax1.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))  # 2, 5, 10, not 10^0
    ax1.xaxis.set_minor_formatter(ticker.NullFormatter())
    ax1.set_xlabel("mean generated tokens per answer (log)")
    ax1.set_ylabel("accuracy (95% CI)")
    ax1.set_ylim(0, 1)
    ax1.set_title(f"test inputs: {name}" if name in report["subsets"] else "test inputs")
    ax1.legend(loc="best")
    broader = {**report.get("broader", {}), **(report.get("harness") or {}).get("tasks", {})}
    names = list(broader)
    if names:
        _delta_bars(ax2, [_wrap_task(n) for n in names], [broader[n] for n in names])
    ax2.set_xlabel("distilled - base accuracy (points, 95% CI)")
    ax2.set_title("broader performance")
    fig.suptitle(f"{report['method']} distillation on {report['task']} ({report['model']})")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def write_report(out: OutputDir, report: dict[str, Any]) -> None:
    out.write_text(json.dumps(report, indent=2), "report.json")
    out.write_text(format_report(report), "report.md")
    png = plot(report)
    with out.fs.open_output_stream(out.path("report.png")) as f:
        f.write(png)
