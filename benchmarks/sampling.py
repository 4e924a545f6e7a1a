"""P1 and P2: the sampling stage against a bare vLLM engine, and N=8 against N=1.

P1 = (generated tokens/s of `s2d` sampling through Ray Data + engine actor, engine start
      excluded) / (tokens/s of a bare `vllm.LLM.generate` of the same prompts, model and
      sampling parameters). Target >= 0.95.
P2 = time of N=8 samples / time of N=1 for the same inputs through the stage. Target <= 3.
Ratios come from one run on this machine (noisy); run: python benchmarks/sampling.py
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODEL = "smollm2-135m-instruct"
N_INPUTS = 16


def bare_tokens_per_s(prompts: list[list[dict[str, str]]], n: int, max_tokens: int) -> tuple[float, int]:
    from vllm import LLM, SamplingParams

    from s2d_ray.config import EngineConfig
    from s2d_ray.models import resolve_model
    from s2d_ray.sampling.engine import prepare_cpu_env

    cfg = EngineConfig(max_model_len=1024, cpu_kv_cache_gib=2)
    prepare_cpu_env(cfg)
    llm = LLM(model=resolve_model(MODEL), dtype=cfg.dtype, max_model_len=cfg.max_model_len, enforce_eager=True,
              seed=cfg.seed, enable_prefix_caching=True)
    params = SamplingParams(n=n, temperature=0.7, top_p=0.95, max_tokens=max_tokens)
    llm.chat(prompts[:2], params, use_tqdm=False)  # warm-up
    start = time.perf_counter()
    outs = llm.chat(prompts, params, use_tqdm=False)
    elapsed = time.perf_counter() - start
    tokens = sum(len(o.token_ids) for out in outs for o in out.outputs)
    del llm
    return tokens / elapsed, tokens


def stage_run(n: int, max_tokens: int, out: str) -> dict:
    from s2d_ray.config import load_config
    from s2d_ray.sampling import sample

    cfg = load_config(ROOT / "configs" / "smoke.yaml", [
        f"output_dir={out}", f"data.n_train={N_INPUTS}", "sample.method=rar1", f"sample.n_samples={n}",
        f"sample.max_tokens={max_tokens}", "sample.temperature=0.7", "sample.actors.batch_size=64",
        "sample.engine.cpu_kv_cache_gib=2"])
    return sample(cfg)["this_run"]


def main() -> dict[str, float]:
    from s2d_ray.programs import get_program
    from s2d_ray.tasks import get_task

    max_tokens = 48
    task = get_task("biased_qa")
    rows = task.generate(N_INPUTS, 0, "train")
    program = get_program("rar1", task.spec)
    prompts = [next(program.run({"input": r["input"], "meta": {}}, 8))[0].messages for r in rows]
    with tempfile.TemporaryDirectory() as tmp:
        n8 = stage_run(8, max_tokens, f"{tmp}/n8")
        n1 = stage_run(1, max_tokens, f"{tmp}/n1")
    bare_tps, bare_tokens = bare_tokens_per_s(prompts, 8, max_tokens)
    stage_tps = n8["generated_tokens"] / n8["busy_s"]
    result = {"P1": round(stage_tps / bare_tps, 3), "P2": round(n8["busy_s"] / n1["busy_s"], 3)}
    print(f"P1 sampling stage {stage_tps:.0f} tok/s ({n8['generated_tokens']} tokens, engine busy {n8['busy_s']:.1f}s, "
          f"stage wall incl. engine start {n8['wall_s']:.1f}s) / bare vLLM {bare_tps:.0f} tok/s ({bare_tokens} tokens) "
          f"= {result['P1']}  (target >= 0.95)")
    print(f"P2 N=8 {n8['busy_s']:.1f}s / N=1 {n1['busy_s']:.1f}s = {result['P2']}  (target <= 3; "
          f"{N_INPUTS} inputs, {MODEL}, rar1, max_tokens {max_tokens})")
    return result


if __name__ == "__main__":
    res = main()
    json.dump(res, sys.stdout)
    print()
