"""P1 and P2: the sampling stage against a bare synchronous vLLM engine, and N=8 against N=1.

P1 (per method: rar1, rar2, s2a) = generated tokens/s of `s2d` sampling (Ray Data + the async
      engine actor, one coroutine per row; engine start excluded: the actor's busy time) /
      tokens/s of a bare `vllm.LLM` that runs the same program steps in lock-step (one
      `LLM.chat` per step over every row) on the same inputs, model, engine arguments and
      sampling parameters (after a warm-up). Targets: >= 1.0 for rar1 (one step), >= 1.2 for
      rar2 and s2a (two steps of variable length).
P2 = engine-busy time of N=8 samples / N=1 for the same inputs through the stage. Target <= 3.
Ratios come from one run on this machine (noisy); run: python benchmarks/sampling.py
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import ROOT, write  # noqa: E402

MODEL = "smollm2-135m-instruct"
N_INPUTS = 24
N_SAMPLES = 4
MAX_TOKENS = 64
TEMPERATURE, TOP_P = 0.7, 0.95
METHODS = ["rar1", "rar2", "s2a"]
SETTINGS = ["sample.engine.max_model_len=1024", "sample.engine.cpu_kv_cache_gib=2", "sample.actors.batch_size=64"]


def stage_run(method: str, n: int, out: str) -> dict:
    from s2d_ray.config import load_config
    from s2d_ray.sampling import sample

    cfg = load_config(ROOT / "configs" / "smoke.yaml", [
        f"output_dir={out}", f"data.n_train={N_INPUTS}", f"sample.method={method}", f"sample.n_samples={n}",
        f"sample.max_tokens={MAX_TOKENS}", f"sample.temperature={TEMPERATURE}", f"sample.top_p={TOP_P}", *SETTINGS])
    return sample(cfg)["this_run"]


def lockstep(llm, runs: list) -> tuple[int, float]:
    """Advance program generators together, one `LLM.chat` per step: (generated tokens, seconds)."""
    from vllm import SamplingParams

    from s2d_ray.programs.base import Completion

    tokens, start = 0, time.perf_counter()
    pending = {i: next(run) for i, run in enumerate(runs)}
    while pending:
        order, pending = list(pending.items()), {}
        calls = [c for _, cs in order for c in cs]
        params = []
        for c in calls:
            temp = TEMPERATURE if c.temperature is None else c.temperature
            params.append(SamplingParams(n=c.n if temp > 0 else 1, temperature=temp, top_p=TOP_P if temp > 0 else 1.0,
                                         max_tokens=c.max_tokens or MAX_TOKENS))
        outs = llm.chat([c.messages for c in calls], params, use_tqdm=False)
        tokens += sum(len(o.token_ids) for out in outs for o in out.outputs)
        pos = 0
        for i, cs in order:
            got = [[Completion(o.text, len(o.token_ids)) for o in out.outputs] for out in outs[pos : pos + len(cs)]]
            pos += len(cs)
            try:
                pending[i] = runs[i].send([g * (c.n // len(g)) for g, c in zip(got, cs)])
            except StopIteration:
                pass
    return tokens, time.perf_counter() - start


def bare(methods: list[str]) -> dict[str, tuple[int, float]]:
    from vllm import LLM

    from s2d_ray.config import EngineConfig
    from s2d_ray.engine import engine_args, prepare_cpu_env
    from s2d_ray.models import resolve_model
    from s2d_ray.programs import get_program
    from s2d_ray.tasks import get_task

    cfg = EngineConfig(max_model_len=1024, cpu_kv_cache_gib=2)
    prepare_cpu_env(cfg)
    llm = LLM(**engine_args(resolve_model(MODEL), cfg))
    task = get_task("biased_qa")
    rows = [{"input": r["input"], "meta": {}} for r in task.generate(N_INPUTS, 0, "train")]
    result = {}
    for method in methods:
        program = get_program(method, task.spec)
        lockstep(llm, [program.run(r, N_SAMPLES) for r in rows[:2]])  # warm-up
        result[method] = lockstep(llm, [program.run(r, N_SAMPLES) for r in rows])
    llm.llm_engine.engine_core.shutdown()  # else its engine process keeps this one from exiting
    return result


def main() -> dict[str, float]:
    import ray

    stage = {}
    with tempfile.TemporaryDirectory() as tmp:
        for method in METHODS:
            stage[method] = stage_run(method, N_SAMPLES, f"{tmp}/{method}")
        n8 = stage_run("rar1", 8, f"{tmp}/n8")
        n1 = stage_run("rar1", 1, f"{tmp}/n1")
    ray.shutdown()
    baseline = bare(METHODS)
    figures: dict[str, float] = {}
    for method in METHODS:
        s, (b_tokens, b_s) = stage[method], baseline[method]
        s_tps, b_tps = s["generated_tokens"] / s["busy_s"], b_tokens / b_s
        figures[f"P1_{method}"] = round(s_tps / b_tps, 3)
        target = 1.0 if method == "rar1" else 1.2
        print(f"P1 {method}: stage {s_tps:.0f} tok/s ({s['generated_tokens']} tokens, engine busy {s['busy_s']:.1f}s, "
              f"wall incl. engine start {s['wall_s']:.1f}s) / bare lock-step vLLM {b_tps:.0f} tok/s ({b_tokens} tokens, "
              f"{b_s:.1f}s) = {figures[f'P1_{method}']}  (target >= {target})")
    figures["P2"] = round(n8["busy_s"] / n1["busy_s"], 3)
    print(f"P2 N=8 {n8['busy_s']:.1f}s / N=1 {n1['busy_s']:.1f}s = {figures['P2']}  (target <= 3; "
          f"{N_INPUTS} inputs, {MODEL}, rar1, max_tokens {MAX_TOKENS})")
    print(f"  {N_INPUTS} biased_qa train inputs x {N_SAMPLES} samples, {MODEL}, temperature {TEMPERATURE}, max_tokens {MAX_TOKENS}")
    return figures


if __name__ == "__main__":
    write("sampling", main())
