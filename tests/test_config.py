"""Typed config: YAML loading, --set overrides, one-line errors (s2d_ray.config)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError
import yaml

from s2d_ray.config import RunConfig, load_config
from s2d_ray.errors import S2DError

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "configs" / "smoke.yaml"
S2D = Path(sys.executable).parent / "s2d"


BASE_YAML = """\
model: smollm2-135m-instruct
output_dir: runs/base
data: {train: task:biased_qa, test: task:biased_qa, n_train: 12, n_test: 8}
sample:
  method: s2a
  n_samples: 4
  filter: {kind: majority, min_agreement: 0.5}
  engine: {max_model_len: 1024, cpu_kv_cache_gib: 1}
  actors: {min_actors: 1, max_actors: 1, batch_size: 8}
"""


@pytest.fixture
def base(tmp_path) -> Path:
    p = tmp_path / "base.yaml"
    p.write_text(BASE_YAML)
    return p


def _one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert "\n" not in msg, msg
    assert msg.startswith("config: "), msg
    return msg


def _leaves(tree, prefix=()):
    for k, v in tree.items():
        if isinstance(v, dict):
            yield from _leaves(v, (*prefix, k))
        else:
            yield (*prefix, k), v


def test_smoke_config_loads():
    raw = yaml.safe_load(SMOKE.read_text())
    cfg = load_config(SMOKE)
    assert isinstance(cfg, RunConfig)
    # Every value written in the file arrives in the typed config, at its dotted path.
    leaves = list(_leaves(raw))
    assert len(leaves) > 10
    for path, value in leaves:
        node = cfg
        for key in path:
            node = getattr(node, key)
        assert node == value, ".".join(path)
    assert cfg.model == raw["model"]
    assert cfg.task_name == "biased_qa"
    # Keys absent from the YAML keep their defaults.
    defaults = RunConfig()
    if "top_p" not in raw.get("sample", {}):
        assert cfg.sample.top_p == defaults.sample.top_p
    assert cfg.model_dump() != defaults.model_dump()


def test_defaults_without_a_file():
    cfg = load_config(None)
    assert cfg == RunConfig()
    assert cfg.sample.n_samples == 8


def test_set_overrides_are_parsed_as_yaml(base):
    cfg = load_config(
        base,
        [
            "sample.n_samples=6",
            "sample.temperature=0.25",
            "sample.filter.kind=usc",
            "sample.engine.enforce_eager=false",
            "data.n_train=null",
            "eval.broader_tasks=[coin_flip, last_letter]",
            "model=qwen2.5-coder-0.5b-instruct",
            "output_dir=runs/x=y",  # only the first '=' separates key and value
        ],
    )
    assert cfg.sample.n_samples == 6 and type(cfg.sample.n_samples) is int
    assert cfg.sample.temperature == 0.25
    assert cfg.sample.filter.kind == "usc"
    assert cfg.sample.filter.min_agreement == 0.5  # sibling keys from the file survive
    assert cfg.sample.engine.enforce_eager is False
    assert cfg.sample.engine.max_model_len == 1024
    assert cfg.data.n_train is None
    assert cfg.eval.broader_tasks == ["coin_flip", "last_letter"]
    assert cfg.model == "qwen2.5-coder-0.5b-instruct"
    assert cfg.output_dir == "runs/x=y"


def test_n_samples_override_is_int(base):
    cfg = load_config(base, ["sample.n_samples=4"])
    assert cfg.sample.n_samples == 4
    assert isinstance(cfg.sample.n_samples, int)


def test_later_override_wins(base):
    cfg = load_config(base, ["sample.n_samples=4", "sample.n_samples=9"])
    assert cfg.sample.n_samples == 9


def test_override_creates_missing_sections():
    cfg = load_config(None, ["train.finetune=full", "sample.actors.max_actors=3"])
    assert cfg.train.finetune == "full"
    assert cfg.sample.actors.max_actors == 3


def test_overrides_change_the_stage_hash(base):
    cfg = load_config(base)
    other = load_config(base, ["sample.n_samples=5"])
    assert cfg.stage_hash("sample") == load_config(base).stage_hash("sample")
    assert cfg.stage_hash("sample") != other.stage_hash("sample")

PLACEMENT_ONLY = ["sample.actors.batch_size=2", "sample.actors.max_actors=8", "sample.actors.num_gpus=1",
                  "sample.actors.rows_per_file=1000", "sample.engine.gpu_memory_utilization=0.5",
                  "sample.engine.max_num_seqs=16", "sample.engine.cpu_kv_cache_gib=6", "sample.engine.enforce_eager=false",
                  "train.num_workers=8", "train.use_gpu=true", "train.cpus_per_worker=4", "train.max_failures=0"]


@pytest.mark.parametrize("override", PLACEMENT_ONLY)
def test_placement_settings_never_enter_a_stage_hash(base, override):
    """A run resumed on a differently sized cluster continues instead of refusing."""
    cfg, moved = load_config(base), load_config(base, [override])
    for section in ("sample", "train", "eval"):
        assert cfg.stage_hash(section) == moved.stage_hash(section), (override, section)


@pytest.mark.parametrize("override", ["sample.temperature=0.1", "sample.engine.max_model_len=512", "sample.engine.seed=3",
                                      "sample.engine.dtype=float32", "train.micro_batch_size=1", "train.learning_rate=0.1"])
def test_settings_that_change_results_do_enter_it(base, override):
    cfg, other = load_config(base), load_config(base, [override])
    assert cfg.stage_hash("sample", "train") != other.stage_hash("sample", "train")


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ("sample.n_samplez=4", "sample.n_samplez"),
        ("sample.filter.kindd=usc", "sample.filter.kindd"),
        ("trian.epochs=1", "trian"),
    ],
)
def test_unknown_key_names_the_dotted_field(base, override, field):
    with pytest.raises(S2DError) as err:
        load_config(base, [override])
    msg = _one_line(err)
    assert f"config: {field}: unknown key" in msg


def test_unknown_key_in_the_file(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("model: x\nsample:\n  engine:\n    max_model_length: 99\n")
    with pytest.raises(S2DError) as err:
        load_config(p)
    assert "sample.engine.max_model_length: unknown key" in _one_line(err)


@pytest.mark.parametrize(
    ("override", "field", "words"),
    [
        ("sample.n_samples=0", "sample.n_samples", "greater than or equal to 1"),
        ("sample.n_samples=65", "sample.n_samples", "less than or equal to 64"),
        ("sample.filter.min_agreement=1.5", "sample.filter.min_agreement", "less than or equal to 1"),
        ("sample.temperature=-0.1", "sample.temperature", "greater than or equal to 0"),
        ("sample.engine.gpu_memory_utilization=0", "sample.engine.gpu_memory_utilization", "greater than 0"),
        ("sample.method=tot", "sample.method", "rar1"),
        ("sample.temperature=hot", "sample.temperature", "valid number"),
        ("train.zero_stage=1", "train.zero_stage", "2"),
    ],
)
def test_out_of_range_or_wrong_type_names_the_field(base, override, field, words):
    with pytest.raises(S2DError) as err:
        load_config(base, [override])
    msg = _one_line(err)
    assert msg.startswith(f"config: {field}: ")
    assert words in msg


def test_cross_field_validation_names_the_section(base):
    with pytest.raises(S2DError) as err:
        load_config(base, ["sample.actors.min_actors=3"])  # max_actors stays 1
    msg = _one_line(err)
    assert msg.startswith("config: sample.actors: ")
    assert "max_actors must be >= min_actors" in msg


def test_several_errors_are_counted_on_one_line(base):
    with pytest.raises(S2DError) as err:
        load_config(base, ["sample.n_samples=0", "sample.top_p=7"])
    assert "(+1 more)" in _one_line(err)


@pytest.mark.parametrize("bad", ["noequals", "=4"])
def test_malformed_set(base, bad):
    with pytest.raises(S2DError) as err:
        load_config(base, [bad])
    assert "expected key=value" in _one_line(err)


def test_set_into_a_scalar_is_an_error(base):
    with pytest.raises(S2DError) as err:
        load_config(base, ["model.name=x"])
    assert "--set model.name: model is not a section" in _one_line(err)


def test_invalid_yaml_names_the_line(tmp_path):
    p = tmp_path / "broken.yaml"
    p.write_text("model: x\nsample:\n  n_samples: 4\n   temperature: [\n")
    with pytest.raises(S2DError) as err:
        load_config(p)
    msg = _one_line(err)
    assert str(p) in msg
    assert "line 4" in msg
    assert "invalid YAML" in msg


def test_top_level_must_be_a_mapping(tmp_path):
    p = tmp_path / "list.yaml"
    p.write_text("- a\n- b\n")
    with pytest.raises(S2DError) as err:
        load_config(p)
    assert "top level must be a mapping" in _one_line(err)


def test_empty_file_gives_defaults(tmp_path):
    p = tmp_path / "empty.yaml"
    p.write_text("# nothing here\n")
    assert load_config(p) == RunConfig()


def test_missing_file(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(S2DError) as err:
        load_config(missing)
    msg = _one_line(err)
    assert str(missing) in msg and "no such file" in msg


def test_directory_is_not_a_config(tmp_path):
    with pytest.raises(S2DError, match="no such file"):
        load_config(tmp_path)


def test_validate_assignment_is_strict(base):
    cfg = load_config(base)
    with pytest.raises(ValidationError):
        cfg.sample.n_samples = 0


def test_task_name_resolution():
    assert load_config(None, ["data.train=/data/x.jsonl", "data.test=task:coin_flip"]).task_name == "coin_flip"
    assert load_config(None, ["data.train=/x.jsonl", "data.test=/y.jsonl"]).task_name is None
    assert load_config(None, ["task=last_letter"]).task_name == "last_letter"


def _s2d(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(S2D), *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_cli_missing_config_exits_2_with_one_line(tmp_path):
    res = _s2d("sample", "/nonexistent.yaml", cwd=tmp_path)
    assert res.returncode == 2
    assert res.stdout == ""
    lines = res.stderr.strip().splitlines()
    assert lines == ["s2d: config: /nonexistent.yaml: no such file"], res.stderr


def test_cli_bad_override_exits_2_with_one_line(tmp_path):
    res = _s2d("sample", str(SMOKE), "--set", "sample.n_samples=0", cwd=tmp_path)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("s2d: config: sample.n_samples: ")
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("overrides", [
    ["sample.actors.num_gpus=1", "sample.engine.tensor_parallel_size=2"],
    ["sample.actors.num_gpus=0", "sample.engine.tensor_parallel_size=2"],
    ["sample.actors.num_gpus=2"],  # two GPUs for an engine that uses one
])
def test_engine_gpus_must_match_tensor_parallelism(base, overrides):
    with pytest.raises(S2DError, match=r"config: sample: actors.num_gpus \(.*\) must equal engine.tensor_parallel_size"):
        load_config(base, overrides)


def test_matching_gpu_placement_loads(base):
    cfg = load_config(base, ["sample.actors.num_gpus=4", "sample.engine.tensor_parallel_size=4"])
    assert cfg.sample.actors.num_gpus == 4
    # one GPU per engine: a fraction packs small engines on one GPU
    assert load_config(base, ["sample.actors.num_gpus=0.5"]).sample.actors.num_gpus == 0.5


def test_serving_gpus_must_match_tensor_parallelism():
    from s2d_ray.serving.app import ServeSettings

    with pytest.raises(ValidationError, match="num_gpus \\(1\\) must equal engine.tensor_parallel_size \\(2\\)"):
        ServeSettings(model_dir="m", num_gpus=1, engine={"tensor_parallel_size": 2})
    assert ServeSettings(model_dir="m", num_gpus=2, engine={"tensor_parallel_size": 2}).num_gpus == 2


def test_enforce_eager_default_follows_the_device(monkeypatch):
    from s2d_ray.config import EngineConfig
    from s2d_ray import engine

    assert EngineConfig().enforce_eager is None
    for cpu in (True, False):
        monkeypatch.setattr(engine, "on_cpu", lambda cpu=cpu: cpu)
        assert engine.engine_args("m", EngineConfig())["enforce_eager"] is cpu  # eager on CPU, CUDA graphs on GPU
        assert engine.engine_args("m", EngineConfig(enforce_eager=True))["enforce_eager"] is True


def test_dtype_auto_is_float32_on_a_cpu_that_emulates_bf16(monkeypatch):
    """engine.dtype auto: bf16 on a CPU with AVX512-BF16/AMX, float32 on an AVX2-only one (bf16 is
    ~4x slower there in vLLM, measured), vLLM's own auto on a GPU; a dtype set in the config is kept."""
    from s2d_ray.config import EngineConfig
    from s2d_ray import engine

    assert EngineConfig().dtype == "auto"
    cases = [(True, True, "bfloat16"), (True, False, "float32"), (False, True, "auto"), (False, False, "auto")]
    for cpu, native, expected in cases:
        monkeypatch.setattr(engine, "on_cpu", lambda cpu=cpu: cpu)
        monkeypatch.setattr(engine, "native_bf16", lambda native=native: native)
        assert engine.engine_args("m", EngineConfig())["dtype"] == expected
        assert engine.engine_args("m", EngineConfig(dtype="bfloat16"))["dtype"] == "bfloat16"
        assert engine.engine_args("m", EngineConfig(dtype="float32"))["dtype"] == "float32"


def test_serving_refuses_an_unknown_system2_method_when_built():
    from s2d_ray.serving.app import ServeSettings

    with pytest.raises(ValidationError, match="system2_method: unknown method 'tot'"):
        ServeSettings(model_dir="m", system2_method="tot")
    assert ServeSettings(model_dir="m", system2_method="rar2", task={"answer": "number"}).program().answers.kind == "number"


def test_balance_needs_a_closed_answer_set_and_never_resamples(tmp_path):
    labels = ["task.name=t", "task.answer=label", "task.labels=[a, b]"]
    with pytest.raises(S2DError, match="closed answer set"):
        load_config(None, ["sample.filter.balance=0.5"])
    cfg, capped = load_config(None, labels), load_config(None, [*labels, "sample.filter.balance=0.5"])
    assert cfg.stage_hash("sample") == capped.stage_hash("sample")  # distill/ is rebuilt, samples are kept


def test_engine_free_filters_never_resample_and_usc_does(base):
    """majority, perturbation and none decide from stored samples (distill/ is rebuilt); usc asks
    the model while sampling, so moving to or from it, or its min_agreement, is another sample stage."""
    from s2d_ray.stage import refilter, sample_spec

    def sample_hash(*overrides):
        return sample_spec(load_config(base, list(overrides))).config_hash

    free = {sample_hash(o) for o in ("sample.filter.kind=majority", "sample.filter.kind=none",
                                     "sample.filter.kind=perturbation", "sample.filter.min_agreement=1.0")}
    usc, usc_strict = sample_hash("sample.filter.kind=usc"), sample_hash("sample.filter.kind=usc", "sample.filter.min_agreement=1.0")
    assert len(free) == 1 and len({*free, usc, usc_strict}) == 3
    spec = sample_spec(load_config(base, ["sample.filter.kind=none", "sample.filter.min_agreement=0.9"]))
    decide = refilter(spec)
    assert (decide.kind, decide.min_agreement) == ("none", 0.9) and decide.answers == spec.program().answers
    assert refilter(sample_spec(load_config(base, ["sample.filter.kind=usc"]))) is None


def test_eval_broader_is_outside_the_eval_hash_and_defaults_to_the_bigbench_suite():
    from s2d_ray.config import BIGBENCH_SUITE

    plain, broader = load_config(None, []), load_config(None, ["eval.broader={}"])
    assert plain.eval.broader is None and broader.eval.broader.tasks == BIGBENCH_SUITE
    assert plain.stage_hash("eval") == broader.stage_hash("eval")  # evaluation is not redone for it
    assert len(BIGBENCH_SUITE) >= 8 and all(t.startswith("bigbench:") for t in BIGBENCH_SUITE)
    with pytest.raises(S2DError, match="n_per_task"):
        load_config(None, ["eval.broader.n_per_task=0"])


# What users typically get wrong in YAML, and the one line each gets back: the key path they
# wrote (no pydantic union branch names), the value YAML read, and the fix.
YAML_MISTAKES = [
    ("task: {answer: label, labels: {plausible: [yes, possible], implausible: [no]}}",
     'config: task.labels.plausible.0: expected a string, got the boolean true (YAML reads unquoted '
     'yes/no/on/off/true/false as booleans); quote the value, e.g. "yes" for yes'),
    ("task: {answer: label, labels: [on, off]}", "config: task.labels.0: expected a string, got the boolean true"),
    ("task: {answer: label, labels: [1, 2, 3]}", 'config: task.labels.0: expected a string, got the number 1; quote it: "1"'),
    ("task: {answer: label, labels: {billing: invoice}}",
     "config: task.labels.billing: expected a list ([a, b], or '- a' lines), got 'invoice'"),
    ("task: {answr: label}", "config: task.answr: unknown key; did you mean 'answer'?"),
    ("sample:\n  - method: s2a", "config: sample: expected a mapping of keys (key: value lines), got a list"),
    ("sample: {n_sample: 4}", "config: sample.n_sample: unknown key; did you mean 'n_samples'?"),
    ("sample: {filter: {kind: majorty}}",
     "config: sample.filter.kind: Input should be 'majority', 'usc', 'perturbation' or 'none', got 'majorty'; did you mean 'majority'?"),
    ("sample: {n_samples: four}", "config: sample.n_samples: Input should be a valid integer, unable to parse string as an integer (got 'four')"),
    ("eval: {group_by: variant}", "config: eval.group_by: expected a list ([a, b], or '- a' lines), got 'variant'"),
    ("model: yes", "config: model: expected a string, got the boolean true"),
    ("sample:\n\tmethod: s2a", "line 3: invalid YAML (found character '\\t' that cannot start any token); YAML indents with spaces, not tabs"),
]


@pytest.mark.parametrize(("snippet", "says"), YAML_MISTAKES, ids=[s.split("\n")[0][:40] for s, _ in YAML_MISTAKES])
def test_typical_yaml_mistakes_name_the_value_and_the_fix(tmp_path, snippet, says):
    p = tmp_path / "c.yaml"
    p.write_text(f"data: {{train: task:coin_flip, test: task:coin_flip}}\n{snippet}\n")
    with pytest.raises(S2DError) as e:
        load_config(p)
    message = str(e.value)
    assert says in message, message
    assert "list[str]" not in message and "dict[" not in message and "\n" not in message
