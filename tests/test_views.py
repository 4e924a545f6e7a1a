"""Paraphrased views (s2d_ray/programs/paraphrase.py, s2d_ray/sampling/views.py): the rewording
check, the program driven by hand, and distill/'s views written by Ray Data on a local Ray."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from s2d_ray.config import load_config
from s2d_ray.datasets import write_derived
from s2d_ray.outputs import DISTILL_COLUMNS, RESULT_SCHEMA, OutputDir, manifest_files, read_manifest
from s2d_ray.programs import get_program
from s2d_ray.programs.base import Completion
from s2d_ray.programs.paraphrase import check_rewrite, clean, names
from s2d_ray.sampling.views import PROGRAM, paraphrase_dir, paraphrase_spec, write_views
from s2d_ray.stage import sample_spec

BIASED = "I think the answer is 111, but I'm really not sure. What is 59 + 63?"


@pytest.mark.parametrize("rewrite, reason", [
    ("What is 59 + 63? My guess would be 111, though I am unsure.", None),
    ("What do you get when you add 59 and 63? I'd say 111, but I may be wrong.", None),
    ("What is 122?", "numbers changed: lost 111, 59, 63; added 122"),  # answered, not reworded
    ("What is 59 + 63? I'm not sure.", "numbers changed: lost 111"),  # the opinion lost
    ("What is 59 + 36? I guess 111.", "numbers changed: lost 63; added 36"),
    ("What is 59 + 63? I guess 111. I guess 111.", "numbers changed: added 111"),
    ("i think the answer is 111 but i'm really not sure what is 59 + 63", "a copy of the input"),
    ("   ", "empty"),
    ("What is 59 + 63? I guess 111. " + "More words. " * 40, "over 3x the input's length"),
])
def test_check_rewrite_keeps_the_numbers_and_opinion_of_the_input(rewrite, reason):
    assert check_rewrite(BIASED, rewrite) == reason


def test_check_rewrite_keeps_the_names_of_the_input():
    text = "I believe the capital of Australia is Sydney. What is the capital of Australia?"
    assert names(text) == {"Australia", "Sydney"}  # "I" and the words that start a sentence are not names
    assert check_rewrite(text, "What is the capital city of Australia? My guess is Sydney.") is None
    assert check_rewrite(text, "What is the capital city? My guess is Sydney.") == "names dropped: Australia"
    assert check_rewrite(text, "What is Australia's capital? Could it be sydney?") == "names dropped: Sydney"


@pytest.mark.parametrize("completion, text", [
    ('"What is 59 + 63? Maybe 111."', "What is 59 + 63? Maybe 111."),
    ("Reworded text: What is 59 + 63? Maybe 111.", "What is 59 + 63? Maybe 111."),
    ('Here is the reworded text: """What is 59 + 63?"""', "What is 59 + 63?"),
    ("What is 59 + 63? Maybe 111.", "What is 59 + 63? Maybe 111."),
])
def test_clean_takes_the_rewording_out_of_its_wrapping(completion, text):
    assert clean(completion) == text


def test_the_program_asks_for_the_raw_input_only_and_marks_each_rewording():
    program = get_program(PROGRAM)
    run = program.run({"id": "q", "input": BIASED, "answer": "122", "meta": {"correct": "122"}}, 3)
    (call,) = next(run)
    assert call.n == 3 and [m["role"] for m in call.messages] == ["user"]  # no system prompt, no format line
    prompt = call.messages[0]["content"]
    assert BIASED in prompt and "122" not in prompt  # never the target (nor the ground truth)
    try:
        run.send([[Completion('"What is 59 + 63? I would guess 111, not sure."', 9), Completion("What is 122?", 4),
                   Completion(BIASED, 20)]])
    except StopIteration as stop:
        samples = stop.value
    assert [s.answer for s in samples] == ["What is 59 + 63? I would guess 111, not sure.", None, None]
    assert [s.view for s in samples] == ["accepted", "dropped: numbers changed: lost 111, 59, 63; added 122",
                                         "dropped: a copy of the input"]


def _sample_row(rid, status="kept", target="122"):
    return {"id": rid, "job": None, "input": f"{BIASED} ({rid})", "system1_input": f"{BIASED} ({rid})\n\nformat line",
            "answer": "122", "meta": "{}", "source": f"task:{rid}", "status": status, "reason": None, "target": target,
            "agreement": 1.0, "method": "s2a", "model": "m", "n_samples": 4, "config_hash": "h1", "generated_tokens": 5,
            "latency_s": 0.1, "busy_s": 0.1, "samples": []}


def _paraphrase_row(rid, rewordings):
    row = _sample_row(rid)
    row.update(status="kept" if any(a for a, _ in rewordings) else "dropped", target=None, method="paraphrase",
               samples=[{"view": view, "text": a or "x", "answer": a, "tokens": 3} for a, view in rewordings])
    return row


def test_views_join_the_distillation_set_with_their_inputs_target_and_go_when_off(tmp_path, local_ray):
    cfg = load_config("configs/demo.yaml", [f"output_dir={tmp_path}", "sample.paraphrase.views=2"])
    out = OutputDir(str(tmp_path))
    samples = [_sample_row("a"), _sample_row("b", target="7"), _sample_row("c", status="dropped")]
    out.write_table(pa.Table.from_pylist(samples, schema=RESULT_SCHEMA), "samples", "part-A-000000.parquet")
    write_derived(out, "h1")
    originals = read_manifest(out, "distill")
    out.write_table(pa.Table.from_pylist([
        _paraphrase_row("a", [("What is 59 + 63? I'd guess 111.", "accepted"), (None, "dropped: numbers changed: lost 63")]),
        _paraphrase_row("b", [("Is 59 + 63 equal to 111, as I think?", "accepted"), ("59 + 63: 111?", "accepted")]),
        _paraphrase_row("x", [("not in distill/", "accepted")]),  # e.g. left out by sample.filter.balance: no view
    ], schema=RESULT_SCHEMA), paraphrase_dir(paraphrase_spec(cfg)), "part-B-000000.parquet")

    counts = write_views(cfg, out)
    assert counts == {"views": 3, "rewordings": {"accepted": 4, "numbers changed": 1}}
    distill = pa.concat_tables([pq.read_table(f) for f in manifest_files(out, "distill")])
    assert distill.column_names == DISTILL_COLUMNS
    rows = {r["id"]: r for r in distill.to_pylist()}
    assert set(rows) == {"a", "b", "a~p0", "b~p0", "b~p1"}
    assert rows["a"]["view_of"] is None and rows["a~p0"]["view_of"] == "a"
    assert [rows[i]["target"] for i in ("a~p0", "b~p0", "b~p1")] == ["122", "7", "7"]  # the kept input's target
    # the view is asked as the sampling program's System 1 prompt (the task's format line after it)
    program = sample_spec(cfg).program()
    assert rows["b~p1"]["input"] == program.system1_input({"input": "59 + 63: 111?", "meta": {}})
    assert rows["b~p1"]["input"].endswith(cfg.task_spec.instruction)
    manifest = read_manifest(out, "distill")
    assert manifest["rows"] == 5 and manifest["originals_hash"] == originals["config_hash"]
    assert manifest["config_hash"] != originals["config_hash"]  # training follows the views
    assert manifest["views"]["paraphrase_hash"] == paraphrase_spec(cfg).config_hash

    other = load_config("configs/demo.yaml", [f"output_dir={tmp_path}", "sample.paraphrase.views=3"])
    assert write_views(other, out) == {"views": 0, "rewordings": {}}  # another K: its own rewordings (none yet)
    assert read_manifest(out, "distill")["rows"] == 2
    assert write_views(cfg, out) == counts and read_manifest(out, "distill")["rows"] == 5  # K=2's are still there
    manifest = read_manifest(out, "distill")

    assert write_views(cfg, out) == counts and read_manifest(out, "distill")["written"] == manifest["written"]  # done
    assert write_derived(out, "h1")["kept"] == 2 and read_manifest(out, "distill")["views"]  # originals unchanged

    off = load_config("configs/demo.yaml", [f"output_dir={tmp_path}"])
    assert write_views(off, out) is None
    back = read_manifest(out, "distill")
    assert back["rows"] == 2 and back["config_hash"] == originals["config_hash"] and "views" not in back
    assert sorted(pq.read_table(out.path("distill"))["id"].to_pylist()) == ["a", "b"]  # the views' files are gone


def test_views_change_no_sampling_hash_and_their_own_settings_change_theirs():
    base = load_config("configs/demo.yaml")
    views = load_config("configs/demo.yaml", ["sample.paraphrase.views=3"])
    assert sample_spec(views).config_hash == sample_spec(base).config_hash  # turning views on never re-samples
    hotter = load_config("configs/demo.yaml", ["sample.paraphrase.views=3", "sample.paraphrase.temperature=1.2"])
    assert len({paraphrase_spec(c).config_hash for c in (base, views, hotter)}) == 3
    placed = load_config("configs/demo.yaml", ["sample.paraphrase.views=3", "sample.actors.batch_size=8"])
    assert paraphrase_spec(placed).config_hash == paraphrase_spec(views).config_hash
    assert json.loads(json.dumps(paraphrase_spec(views).engine)) == views.sample.engine.model_dump()
