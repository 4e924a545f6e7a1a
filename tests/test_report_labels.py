"""Per-label truth in the report (closed answer sets), on real Ray with an instant fake engine in
place of vLLM (benchmarks/fake_engine.py) whose every answer is one label: the report says so,
with balanced accuracy 50%, instead of a gain that is the test set's label share."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
TASK = {"name": "plausibility", "answer": "label", "labels": ["plausible", "implausible"]}


def test_a_constant_label_is_reported_as_such(tmp_path):
    test = tmp_path / "test.jsonl"
    rows = [{"id": f"t{i}", "input": f"Sentence {i}: is it plausible?", "answer": "plausible" if i < 7 else "implausible"}
            for i in range(20)]
    test.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "run"
    (out / "model").mkdir(parents=True)
    (out / "model" / "config.json").write_text("{}")  # the fake engine loads no weights
    (out / "model" / "s2d_train.json").write_text(json.dumps(
        {"config_hash": "t", "finetune": "lora", "zero_stage": 2, "examples": 1, "steps": 1, "first_loss": 1.0, "last_loss": 1.0}))
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"model": "smollm2-135m-instruct", "output_dir": str(out), "task": TASK,
                                      "data": {"train": str(test), "test": str(test)},
                                      "sample": {"method": "s2a", "n_samples": 2, "actors": {"batch_size": 4}},
                                      "eval": {"broader_tasks": []}}))
    env = {**os.environ, "S2D_FAKE_ENGINE_ANSWER": "plausible"}
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "fake_engine.py"), "eval", str(config)],
                         capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    s1 = report["systems"]["system1"]
    assert s1["accuracy"] == 7 / 20  # the share of 'plausible' in the test set
    assert s1["balanced_accuracy"] == 0.5 and s1["labels"]["predicted"] == {"plausible": 20}
    assert s1["labels"]["majority_baseline"] == {"label": "implausible", "accuracy": 13 / 20}
    assert s1["labels"]["confusion"] == {"plausible": {"plausible": 7, "implausible": 0, "(no answer)": 0},
                                         "implausible": {"plausible": 13, "implausible": 0, "(no answer)": 0}}
    assert any(w.startswith("System 1 (base) answers 'plausible' to 20 of 20 test inputs (100%)") for w in report["warnings"])
    assert report["balanced_delta"]["delta"] == 0.0 and report["balanced_delta"]["n"] == 20
    md = (out / "report.md").read_text()
    assert "**Warning:** System 1 (base) answers 'plausible' to 20 of 20 test inputs (100%)" in md
    assert "| System 1 (base) | 35.0% |" in md and "50.0% [50.0, 50.0] |" in md
    assert "majority-class baseline 65.0% (always 'implausible')" in md
