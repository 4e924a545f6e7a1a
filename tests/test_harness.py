"""Broader performance through lm-evaluation-harness (s2d_ray/evaluation/harness.py): BIG-bench
tasks turned into local harness tasks, the harness driving the project's own engine, and
`s2d broader` pairing base and distilled models per document."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

from s2d_ray.errors import S2DError
from s2d_ray.evaluation.harness import SDIST_ENV, _paired, bigbench_prompt, harness_name, prepare_bigbench

COUNTRIES = [("France", "Paris"), ("Japan", "Tokyo"), ("Italy", "Rome"), ("Egypt", "Cairo"), ("Spain", "Madrid"),
             ("Russia", "Moscow")]
# Choices not listed in the prompt: listed, the 135M model picks the last one ("Seven") every time.
CAPITALS = {"name": "capitals", "example_input_prefix": "\nQuestion: ", "example_output_prefix": "\nAnswer: ",
            "append_choices_to_input": False,
            "examples": [{"input": f"What is the capital of {c}?", "target_scores": {a: 1, "Banana": 0, "Seven": 0}}
                         for c, a in COUNTRIES]
            + [{"input": "Name a colour.", "target_scores": {"red": 1, "blue": 1}},   # two right answers: left out
               {"input": "Write a poem.", "target": "roses"}]}                         # not multiple choice: left out
SUMS = {"name": "sums", "append_choices_to_input": False,
        "examples": [{"input": f"{a} + {b} =", "target_scores": {str(a + b): 1, str(a + b + 10): 0}} for a, b in
                     [(1, 2), (3, 4), (5, 5), (2, 7)]]}


def make_sdist(path: Path, tasks: dict[str, dict]) -> Path:
    """A file laid out as the bigbench sdist is (bigbench-1.0.0/bigbench/benchmark_tasks/<task>/task.json)."""
    with tarfile.open(path, "w:gz") as tf:
        for rel, task in tasks.items():
            data = json.dumps(task).encode()
            info = tarfile.TarInfo(f"bigbench-1.0.0/bigbench/benchmark_tasks/{rel}/task.json")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture
def sdist(tmp_path, monkeypatch):
    monkeypatch.setenv("S2D_CACHE", str(tmp_path / "cache"))
    path = make_sdist(tmp_path / "bigbench-1.0.0.tar.gz", {"geo/capitals": CAPITALS, "sums": SUMS})
    monkeypatch.setenv(SDIST_ENV, str(path))
    return path


def test_bigbench_prompt_lays_out_choices_as_bigbench_does():
    ex = {"input": "2 + 2 =", "target_scores": {"4": 1, "5": 0}}
    assert bigbench_prompt({}, ex) == "Q: 2 + 2 =\n  choice: 4\n  choice: 5\nA:"
    assert bigbench_prompt({"task_prefix": "Add.\n", "append_choices_to_input": False, "example_output_prefix": " = "},
                           {"input": "2 + 2", "target_scores": {"4": 1}}) == "Add.\n\nQ: 2 + 2 ="


def test_prepare_bigbench_writes_local_harness_tasks(sdist):
    root = prepare_bigbench(["bigbench:geo/capitals", "bigbench:sums"], 4, seed=3)
    name = harness_name("bigbench:geo/capitals")
    docs = [json.loads(line) for line in (root / f"{name}.jsonl").read_text().splitlines()]
    assert len(docs) == 4 and all(d["choices"][d["gold"]] in dict(COUNTRIES).values() for d in docs)
    assert all(d["input"].startswith("Question: What is the capital of") and d["input"].endswith("Answer:") for d in docs)
    spec = yaml.safe_load((root / f"{name}.yaml").read_text())
    assert spec["task"] == name and spec["dataset_path"] == "json" and spec["output_type"] == "multiple_choice"
    assert spec["dataset_kwargs"]["data_files"]["test"] == str(root / f"{name}.jsonl")
    assert prepare_bigbench(["bigbench:sums", "bigbench:geo/capitals"], 4, seed=3) == root  # cached
    other = prepare_bigbench(["bigbench:geo/capitals"], 4, seed=4)
    assert [json.loads(x)["input"] for x in (other / f"{name}.jsonl").read_text().splitlines()] != [d["input"] for d in docs]
    all_docs = prepare_bigbench(["bigbench:geo/capitals"], None, seed=3)
    assert len((all_docs / f"{name}.jsonl").read_text().splitlines()) == len(COUNTRIES)  # 2 examples left out
    with pytest.raises(S2DError, match=r"no BIG-bench JSON task \['geo/nope'\]"):
        prepare_bigbench(["bigbench:geo/nope"], 4, seed=0)


def test_paired_delta_binary_and_graded():
    a = {str(i): float(i < 6) for i in range(10)}
    b = {str(i): float(i < 8) for i in range(10)}
    d = _paired(a, b, seed=0)
    assert d["base"] == 0.6 and d["distilled"] == 0.8 and d["delta"] == pytest.approx(0.2) and d["n"] == 10
    assert d["delta_ci95"][0] <= 0.2 <= d["delta_ci95"][1]
    graded = _paired({"x": 0.5, "y": 0.25}, {"x": 0.75, "y": 0.25, "z": 1.0}, seed=0)
    assert graded["delta"] == pytest.approx(0.125) and graded["n"] == 2


def test_broader_table_shows_what_a_multiple_choice_score_is_made_of():
    """A model that picks one choice on every document scores that choice's share of the gold
    answers: the table gives the best constant choice beside it, and a warning names it."""
    from s2d_ray.evaluation.harness import _choice_shape
    from s2d_ray.evaluation.report import format_harness

    base = {str(i): [0, i % 2] for i in range(50)}  # [chosen, gold]: always choice 0, gold alternates
    distilled = {str(i): [i % 2, i % 2] for i in range(50)}  # right every time
    shape = _choice_shape(base, distilled)
    assert shape == {"constant_choice": {"choice": 0, "score": 0.5},
                     "top_pick": {"base": {"choice": 0, "share": 1.0}, "distilled": {"choice": 0, "share": 0.5}}}
    scores = [{k: float(c == g) for k, (c, g) in m.items()} for m in (base, distilled)]
    row = {"metric": "acc", **_paired(*scores, seed=0), **shape}
    text = "\n".join(format_harness({"bigbench:x": row}, {"lm_eval": "0.4.13", "num_fewshot": 0}))
    assert "| 50.0% | 100.0% | +50.0 pts |" in text and "| 50 | 50.0% (choice 0) | 100% choice 0 / 50% choice 0 |" in text
    assert "warning: bigbench:x: the base model picks choice 0 on 100% of documents; a score there" in text
    assert "distilled model picks" not in text
    assert _choice_shape({}, {}) == {}  # a generation task: no choices


@pytest.mark.slow
def test_engine_lm_log_likelihoods_match_transformers(loop, small_engine):
    """lm-eval's requests through the project's engine give the log-likelihoods transformers
    computes for the same model (bf16 engine against fp32, so to a tolerance) and its greediness."""
    import torch
    from lm_eval.api.instance import Instance
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from s2d_ray.evaluation.harness import engine_lm
    from s2d_ray.models import resolve_model

    pairs = [("Question: What is the capital of France?\nAnswer:", " Paris"),
             ("Question: What is the capital of France?\nAnswer:", " Banana"),
             ("2 + 3 = ", "5")]
    lm = engine_lm(small_engine, loop)
    got = lm.loglikelihood([Instance("loglikelihood", {}, p, i) for i, p in enumerate(pairs)])
    path = resolve_model("smollm2-135m-instruct")
    tok, model = AutoTokenizer.from_pretrained(path), AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    for (ctx, cont), (ll, greedy) in zip(pairs, got):
        if ctx.endswith(" "):
            ctx, cont = ctx[:-1], " " + cont
        c, w = tok.encode(ctx, add_special_tokens=False), tok.encode(ctx + cont, add_special_tokens=False)
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([w])).logits[0], -1)
        want = sum(float(logp[i - 1, w[i]]) for i in range(len(c), len(w)))
        top = all(int(logp[i - 1].argmax()) == w[i] for i in range(len(c), len(w)))
        assert ll == pytest.approx(want, abs=0.15 + 0.05 * abs(want)), (ctx, cont, ll, want)
        assert greedy == top or abs(ll - want) > 0.01  # greediness agrees where the numbers agree closely
    assert got[0][0] > got[1][0] + 3  # Paris over Banana by far


@pytest.mark.slow
def test_s2d_broader_pairs_base_and_distilled_per_document(tmp_path):
    """`s2d broader` on Ray: the harness over a base and a "distilled" model that is the same
    weights, so every document scores the same and the delta is 0; the easy capitals task is
    answered well above chance."""
    from s2d_ray.models import resolve_model

    sdist = make_sdist(tmp_path / "bigbench-1.0.0.tar.gz", {"geo/capitals": CAPITALS, "sums": SUMS})
    env = {**os.environ, SDIST_ENV: str(sdist)}
    base = Path(resolve_model("smollm2-135m-instruct"))
    out = tmp_path / "run"
    (out / "model").mkdir(parents=True)
    for f in base.iterdir():
        (out / "model" / f.name).symlink_to(f)
    (out / "model" / "s2d_train.json").write_text(json.dumps({"config_hash": "same-weights"}))
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "model": "smollm2-135m-instruct", "output_dir": str(out),
        "sample": {"engine": {"max_model_len": 512, "cpu_kv_cache_gib": 1}},
        "eval": {"broader": {"tasks": ["bigbench:geo/capitals", "bigbench:sums"], "n_per_task": 6}}}))
    run = subprocess.run([str(Path(sys.executable).parent / "s2d"), "broader", str(config)],
                         capture_output=True, text=True, env=env, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    report = json.loads((out / "broader" / "report.json").read_text())
    capitals, sums = report["tasks"]["bigbench:geo/capitals"], report["tasks"]["bigbench:sums"]
    assert capitals["n"] == 6 and sums["n"] == 4 and capitals["metric"] == "acc"
    assert capitals["delta"] == 0 and sums["delta"] == 0 and capitals["base"] == capitals["distilled"]
    assert capitals["base"] >= 5 / 6  # SmolLM2 knows these capitals over "Banana" and "Seven"
    per_doc = [json.loads((out / "broader" / f"{m}.json").read_text())["tasks"] for m in ("base", "distilled")]
    assert per_doc[0]["bigbench:geo/capitals"]["docs"] == per_doc[1]["bigbench:geo/capitals"]["docs"]
    picks = per_doc[0]["bigbench:geo/capitals"]["picks"]  # each document's [chosen, gold] is what acc scored
    assert picks.keys() == per_doc[0]["bigbench:geo/capitals"]["docs"].keys()
    assert all(per_doc[0]["bigbench:geo/capitals"]["docs"][d] == float(c == g) for d, (c, g) in picks.items())
    assert capitals["top_pick"]["base"] == capitals["top_pick"]["distilled"] and 0 < capitals["constant_choice"]["score"] <= 1
    assert "| bigbench:geo/capitals | acc |" in (out / "broader" / "report.md").read_text()
    assert (out / "broader" / "report.png").read_bytes()[:4] == b"\x89PNG"
    again = subprocess.run([str(Path(sys.executable).parent / "s2d"), "broader", str(config)],
                           capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode == 0 and "broader: lm-evaluation-harness" not in again.stdout  # both models' results reused
