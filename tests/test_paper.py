"""`s2d paper`: the table of methods and baselines (from reports), and the config it runs."""

from __future__ import annotations

import pytest

from s2d_ray.config import load_config
from s2d_ray.errors import S2DError
from s2d_ray.paper import _entry, format_table, plot
from s2d_ray.stage.spec import sample_spec


def _system(acc: float, tokens: float, n: int = 40, **extra) -> dict:
    return {"accuracy": acc, "accuracy_ci95": [acc - 0.1, acc + 0.1], "mean_generated_tokens": tokens, "n": n, **extra}


def _report(task: str, method: str, **extra) -> dict:
    return {"task": task, "method": method, "model": "qwen2.5-coder-0.5b-instruct",
            "systems": {"system1": _system(0.2, 5), "system2": _system(0.6, 120), "distilled": _system(0.55, 6)},
            "distillation_set": {"kept": 30, "valid_inputs": 50, "n_samples": 4}, **extra}


def _baseline(acc: float) -> dict:
    return {"systems": {"distilled": _system(acc, 5)}}


def test_table_has_every_system_and_baseline_per_method():
    s2a = _entry("demo", _report("biased_qa", "s2a", subsets={"phrasing_split=test": {
        "system1": _system(0.1, 5), "distilled": _system(0.3, 6), "delta": {}}},
        broader={"coin_flip": {"base": 0.5, "distilled": 0.45, "delta": -0.05, "delta_ci95": [-0.1, 0.0], "n": 60}}),
        {"distill_system1": _baseline(0.25), "no_filter": _baseline(0.5)})
    bsm = _entry("bsm", _report("pairwise", "bsm", systems={
        "system1": _system(0.5, 2, swap_inconsistent={"pairs": 20, "inconsistent": 9, "fraction": 0.45, "ci95": [0.2, 0.6]}),
        "system2": _system(0.7, 300), "distilled": _system(0.6, 2)}), {"distill_system1": _baseline(0.5), "no_filter": _baseline(0.55)})
    cot = _entry("cot", _report("word_problems", "cot", majority_at={"distilled": {"1": _system(0.1, 8), "10": _system(0.15, 80)}}),
                 {"distill_system1": _baseline(0.1), "no_filter": _baseline(0.12)})
    text = format_table([s2a, bsm, cot])
    header, _, *rows = text.splitlines()[:5]
    assert header == ("| task (method) | System 1 | System 2 | Distilled System 1 | Distill System 1 (baseline) | "
                      "Distilled, no filter (baseline) |")
    assert rows[0] == ("| biased_qa (s2a) | 20.0 [10.0, 30.0], 5 tok | 60.0 [50.0, 70.0], 120 tok | 55.0 [45.0, 65.0], 6 tok | "
                       "25.0 [15.0, 35.0], 5 tok | 50.0 [40.0, 60.0], 5 tok |")
    assert rows[1].startswith("| pairwise (bsm) | 50.0 [40.0, 60.0], 2 tok, 45.0% inconsistent |")
    assert "- subset phrasing_split=test: System 1 10.0%, Distilled System 1 30.0%" in text
    assert "- broader coin_flip: base 50.0% -> distilled 45.0% (-5.0 pts [-10.0, +0.0], n=60)" in text
    assert "- majority@k, Distilled System 1: k=1 10.0%, k=10 15.0%" in text
    png = plot([s2a, bsm, cot])
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_distill_system1_baseline_answers_the_methods_system1_prompts():
    cfg = load_config("configs/smoke.yaml", ["sample.method=direct", "sample.system1_of=bsm", "data.train=task:pairwise",
                                             "data.test=task:pairwise"])
    spec = sample_spec(cfg)
    assert spec.method == "direct" and spec.system1_of == "bsm"
    row = {"input": "What is 2 + 2?", "meta": {"response_a": "4.", "response_b": "5."}}
    assert "[Response A]\n4." in spec.program().system1_input(row)
    plain = sample_spec(load_config("configs/smoke.yaml", ["sample.method=direct", "data.train=task:pairwise",
                                                            "data.test=task:pairwise"]))
    assert plain.config_hash != spec.config_hash  # other prompts, other distillation set
    with pytest.raises(S2DError, match="system1_of: only with method direct"):
        load_config("configs/smoke.yaml", ["sample.system1_of=bsm"])


def test_a_changed_task_generator_changes_the_sampling_lineage(monkeypatch):
    """Rows of built-in tasks are regenerated from code: a changed generator must not resume onto
    the old rows under the same ids (files as inputs carry their own content)."""
    import s2d_ray.tasks as tasks

    cfg = load_config("configs/smoke.yaml", [])
    before = sample_spec(cfg).config_hash
    assert tasks.generator_fingerprint("data/x.jsonl") is None
    monkeypatch.setattr(tasks, "generator_fingerprint", lambda *sources: "changed")
    import s2d_ray.stage.spec as spec_module

    monkeypatch.setattr(spec_module, "generator_fingerprint", tasks.generator_fingerprint)
    assert sample_spec(cfg).config_hash != before


def test_make_paper_configs_load_and_the_gpu_twins_match_them():
    """Every config `make paper` runs is valid, and each GPU twin keeps its method, task and filter."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    make = (root / "Makefile").read_text()
    configs = re.search(r"s2d paper (.+?) --out", make).group(1).split()
    assert "configs/demo.yaml" in configs and len(configs) == 4
    twins = {"configs/demo.yaml": "s2a", "configs/paper/rar.yaml": "rar", "configs/paper/bsm.yaml": "bsm",
             "configs/paper/cot.yaml": "cot"}
    for path in configs:
        cpu = load_config(root / path, [])
        gpu = load_config(root / "cluster" / "configs" / "paper-gpu" / f"{twins[path]}.yaml", [])
        assert (gpu.sample.method, gpu.task_name, gpu.sample.filter.kind) == (cpu.sample.method, cpu.task_name, cpu.sample.filter.kind)
        assert gpu.train.use_gpu and gpu.sample.actors.num_gpus == 1 and gpu.output_dir.startswith("s3://")
        assert "Probed on the TRAIN split" in (root / path).read_text() or path == "configs/demo.yaml"


def test_the_1_5b_configs_load_on_one_train_worker_and_say_what_was_probed():
    """The opt-in 1.5B configs are valid, use the 1.5B built-in with one Ray Train worker (two ran
    out of 24 GiB at the LoRA merge), and their headers cite a train-split probe and a wall time."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    paths = sorted((root / "configs" / "paper-1.5b").glob("*.yaml"))
    assert {p.stem for p in paths} >= {"s2a", "rar"}
    for path in paths:
        cfg = load_config(path, [])
        header = path.read_text().split("\nmodel:")[0]
        assert cfg.model == "qwen2.5-coder-1.5b-instruct" and cfg.train.num_workers == 1, path.name
        assert cfg.output_dir == f"runs/paper-1.5b/{path.stem}", path.name
        assert "Probed on the TRAIN split" in header and "Wall time" in header, path.name


def test_a_constant_answer_on_a_label_task_shows_in_the_table_with_balanced_accuracy():
    """The paper table cannot present one answer to every input as a score: balanced accuracy
    beside accuracy, the constant answer's share in the cell, the majority-class baseline and
    the report's warnings under the table (a baseline's warnings named by the baseline)."""
    labels = {"constant": {"answer": "A", "n": 48, "share": 1.0}, "majority_baseline": {"label": "A", "accuracy": 0.5}}
    constant = _system(0.5, 2, balanced_accuracy=0.5, balanced_accuracy_ci95=[0.5, 0.5], labels=labels)
    spread = _system(0.7, 300, balanced_accuracy=0.65, balanced_accuracy_ci95=[0.5, 0.8],
                     labels={**labels, "constant": None})
    warning = "System 1 answers 'A' to 48 of 48 test inputs (100%): its accuracy is that label's share"
    bsm = _entry("bsm", _report("pairwise", "bsm", systems={"system1": constant, "system2": spread, "distilled": constant},
                                warnings=[warning]),
                 {"distill_system1": {**_baseline(0.5), "warnings": ["the distillation set's kept targets: 3 of 3 (100%) are 'A'"]},
                  "no_filter": _baseline(0.55)})
    text = format_table([bsm])
    row = text.splitlines()[2]
    assert row.startswith("| pairwise (bsm) | 50.0 [40.0, 60.0], 2 tok, balanced 50.0 [50.0, 50.0], 100% 'A' | "
                          "70.0 [60.0, 80.0], 300 tok, balanced 65.0 [50.0, 80.0] |")
    assert f"- warning: {warning}" in text
    assert "- warning: Distill System 1 (baseline): the distillation set's kept targets: 3 of 3 (100%) are 'A'" in text
    assert "- majority-class baseline (always 'A'): 50.0%" in text
    assert "labels" not in bsm["systems"]["system1"] and bsm["systems"]["system1"]["constant"]["answer"] == "A"
    assert plot([bsm])[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_no_filter_baseline_starts_from_the_methods_samples(tmp_path):
    """BASELINES' no-filter run samples what the method's run sampled (an engine-free filter is
    not in the sample stage's hash): its output_dir gets a copy of samples/, manifest last; a
    run not finished, a baseline that samples something else, or one with samples of its own get none."""
    from s2d_ray.outputs import OutputDir, read_manifest, write_manifest
    from s2d_ray.paper import BASELINES, share_samples

    def cfg(name, *overrides):
        return load_config("configs/smoke.yaml", [f"output_dir={tmp_path / name}", *overrides])

    method = cfg("run")
    src = OutputDir(method.output_dir)
    src.write_text("rows", "samples", "part-a.parquet")
    write_manifest(src, "samples", config_hash=sample_spec(method).config_hash, parent=None, complete=False)
    no_filter = cfg("run-no_filter", *BASELINES["no_filter"][1])
    assert not share_samples(method, no_filter)  # the method's sampling has not finished
    write_manifest(src, "samples", config_hash=sample_spec(method).config_hash, parent=None, complete=True)
    assert share_samples(method, no_filter)
    dst = OutputDir(no_filter.output_dir)
    assert dst.read_text("samples", "part-a.parquet") == "rows" and read_manifest(dst, "samples") == read_manifest(src, "samples")
    assert sorted(p.name for p in (tmp_path / "run-no_filter" / "samples").iterdir()) == ["_manifest.json", "part-a.parquet"]
    assert not share_samples(method, no_filter)  # it has samples now
    distill_system1 = cfg("run-distill_system1", *(o.format(method="s2a") for o in BASELINES["distill_system1"][1]))
    assert not share_samples(method, distill_system1) and not (tmp_path / "run-distill_system1").exists()
