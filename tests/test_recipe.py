"""The prompt recipe a trained model carries (s2d_ray.recipe): it rebuilds exactly the prompt
evaluation asks the distilled model, for every kind of program, and a recipe that no longer
agrees with its task is refused by name."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from s2d_ray.config import load_config
from s2d_ray.errors import S2DError
from s2d_ray.evaluation import _specs
from s2d_ray.recipe import RECIPE_FILE, PromptRecipe, read_recipe, recipe_of

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(("config", "sets", "row"), [
    ("configs/demo.yaml", [], {"input": "Which city is the capital of Peru?", "meta": {}}),
    ("configs/paper/bsm.yaml", [], {"input": "Which is better?", "meta": {"response_a": "Lima.", "response_b": "Cusco."}}),
    ("configs/paper/bsm.yaml", ["sample.method=direct", "sample.system1_of=bsm"],
     {"input": "Which is better?", "meta": {"response_a": "Lima.", "response_b": "Cusco."}}),
    ("configs/examples/tickets.yaml", [], {"input": "I was charged twice", "meta": {}}),
])
def test_recipe_rebuilds_the_prompt_evaluation_asks_the_distilled_model(config, sets, row):
    cfg = load_config(ROOT / config, sets)
    recipe = PromptRecipe.model_validate_json(recipe_of(cfg).model_dump_json())  # as read back from model/
    evaluated = _specs(cfg, "model", "h", system2=False)["distilled"].program()
    assert recipe.messages(row["input"], row["meta"]) == evaluated.call(evaluated.system1_input(row)).messages
    assert recipe.max_tokens == cfg.eval.max_tokens
    if recipe.method != "bsm":  # BSM's judging prompt words its own format line
        assert recipe.format_line in recipe.messages(row["input"], row["meta"])[-1]["content"]


def test_the_recipe_file_states_what_the_prompt_says():
    cfg = load_config(ROOT / "configs/examples/tickets.yaml")
    body = json.loads(recipe_of(cfg).model_dump_json())
    assert body["answers"]["kind"] == "label" and body["answers"]["labels"] == list(cfg.task_spec.label_map)
    assert body["format_line"] == cfg.task_spec.instruction and body["system_prompt"] == cfg.task_spec.system_prompt
    assert body["template"] and body["method"].endswith("triage.yaml")  # a template program travels as its text


def test_a_recipe_that_disagrees_with_its_task_is_refused_naming_the_field(tmp_path):
    body = json.loads(recipe_of(load_config(ROOT / "configs/demo.yaml")).model_dump_json())
    (tmp_path / RECIPE_FILE).write_text(json.dumps({**body, "format_line": "Answer in French."}))
    with pytest.raises(S2DError, match="format_line: 'Answer in French.' is not what the recipe's task gives"):
        read_recipe(str(tmp_path))
    (tmp_path / RECIPE_FILE).write_text(json.dumps({**body, "surprise": 1}))
    with pytest.raises(S2DError, match="surprise"):
        read_recipe(str(tmp_path))
    assert read_recipe(str(tmp_path / "elsewhere")) is None  # a model without one: prompts go raw
