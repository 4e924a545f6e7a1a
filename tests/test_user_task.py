"""A user's own task and program on real Ray workers with the real small model: a Program
subclass imported from a directory outside the package, and the two worked examples in
configs/examples/ (a YAML template program, a Python program by import path), sampled."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow.parquet as pq
import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
S2D = str(Path(sys.executable).parent / "s2d")
SMALL = ["model=smollm2-135m-instruct", "sample.n_samples=2", "sample.max_tokens=24", "sample.actors.batch_size=4",
         "sample.engine.cpu_kv_cache_gib=1", "sample.filter.min_agreement=0"]


def _sample(config: Path, out: Path, *overrides: str, cwd: Path) -> list[dict]:
    args = [S2D, "sample", str(config), "--set", f"output_dir={out}", *[a for o in overrides for a in ("--set", o)]]
    res = subprocess.run(args, capture_output=True, text=True, cwd=cwd, timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "inputs read" in res.stdout
    return pq.read_table(out / "samples").to_pylist()


def test_program_by_import_path_from_outside_the_package_runs_on_ray_workers(tmp_path):
    project = tmp_path / "my_project"  # the user's own directory: `s2d` runs from here
    project.mkdir()
    (project / "my_programs.py").write_text(textwrap.dedent('''
        from s2d_ray.programs import Program, Sample

        class DraftThenAnswer(Program):
            name = "draft_then_answer"

            def run(self, row, n):
                (drafts,) = yield [self.call("Draft a short reply to: " + row["input"], n=n)]
                finals = yield [self.call("DRAFT-MARKER " + d.text + "\\n\\n" + self.step_format) for d in drafts]
                return [Sample(self.extract(f.text), [d.text, f.text], d.tokens + f.tokens) for d, (f,) in zip(drafts, finals)]
    '''))
    (project / "tickets.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [
        {"id": "t1", "input": "I was charged twice this month.", "answer": "Billing"},
        {"id": "t2", "input": "The app crashes when I open settings.", "answer": "Technical"},
        {"id": "t3", "input": "Where is my parcel?", "answer": "Shipping"},
    ]))
    config = project / "run.yaml"
    config.write_text(textwrap.dedent("""
        data: {train: tickets.jsonl, test: tickets.jsonl}
        task: {name: tickets, answer: label, labels: [Billing, Technical, Shipping]}
        sample: {method: "my_programs:DraftThenAnswer", filter: {kind: none}}
    """))
    rows = _sample(config, tmp_path / "run", *SMALL, cwd=project)
    assert sorted(r["id"] for r in rows) == ["t1", "t2", "t3"]
    assert {r["method"] for r in rows} == {"my_programs:DraftThenAnswer"}
    for r in rows:
        assert r["status"] != "rejected", r["reason"]
        assert len(r["samples"]) == 2 and all(s["text"].count("\n\n---\n\n") == 1 for s in r["samples"])
        # Answers are read with the task's closed label set: a label or nothing.
        assert all(s["answer"] in (None, "Billing", "Technical", "Shipping") for s in r["samples"])


@pytest.mark.parametrize("example,steps", [("tickets", 2), ("orders", 2)])
def test_worked_examples_sample_on_the_real_model(tmp_path, example, steps):
    rows = _sample(ROOT / "configs" / "examples" / f"{example}.yaml", tmp_path / example, *SMALL, "data.n_train=4",
                   cwd=ROOT)
    assert len(rows) == 4 and all(r["status"] != "rejected" for r in rows), [r["reason"] for r in rows]
    for r in rows:
        assert all(len(s["text"].split("\n\n---\n\n")) == steps for s in r["samples"])
    summary = json.loads((tmp_path / example / "samples_summary.json").read_text())
    assert summary["inputs"] == 4 and "kept_target_accuracy" in summary or summary["kept"] == 0
