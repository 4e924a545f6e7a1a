"""s2d_ray.evaluation: what happens to ``eval/distilled`` when ``model/`` was trained again."""

from __future__ import annotations

from s2d_ray.evaluation import _drop_replaced_model_results
from s2d_ray.outputs import OutputDir, read_manifest, write_manifest


def _distilled_results(tmp_path, **manifest) -> OutputDir:
    out = OutputDir(str(tmp_path))
    out.write_text("rows", "eval/distilled", "part-0.parquet")
    if manifest:
        write_manifest(out, "eval/distilled", **manifest)
    return out


def test_results_of_a_replaced_model_are_dropped_and_the_new_model_is_evaluated(tmp_path, capsys):
    out = _distilled_results(tmp_path, config_hash="e1", parent="model-a", complete=True)
    _drop_replaced_model_results(out, "model-b")
    assert not out.exists("eval/distilled")
    assert "trained for model-a; model/ is now trained for model-b" in capsys.readouterr().out


def test_results_of_the_current_model_or_of_no_recorded_model_are_kept(tmp_path):
    out = _distilled_results(tmp_path, config_hash="e1", parent="model-a", complete=False)
    _drop_replaced_model_results(out, "model-a")  # a stopped eval of this model resumes
    assert out.exists("eval/distilled", "part-0.parquet") and read_manifest(out, "eval/distilled")["parent"] == "model-a"
    bare = _distilled_results(tmp_path / "bare")  # no manifest: check_config decides
    _drop_replaced_model_results(bare, "model-b")
    assert bare.exists("eval/distilled", "part-0.parquet")
