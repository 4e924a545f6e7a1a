"""P5: serving overhead and a bounded load test (the adaptive mode's curve: benchmarks/adaptive.py).

P5 = p50 latency of POST /v1/chat/completions through `s2d serve` (Ray Serve + vLLM async
     engine) / p50 of a bare `vllm.LLM.chat` call with the same prompt and parameters.
     Target <= 1.15.
Load test: a fixed number of requests at fixed concurrency on 127.0.0.1; p50/p95, throughput,
count of 5xx (must be 0). One run; run: python benchmarks/serving.py
"""

from __future__ import annotations

import signal
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import served  # noqa: E402  (s2d serve started and stopped as the tests do)
from results import BENCH_DIR, ROOT, write  # noqa: E402

PORT = 8397
URL = f"http://127.0.0.1:{PORT}"
PROMPT = [{"role": "user", "content": "What is the capital of France? Answer with just the answer."}]
N_LATENCY, N_LOAD, CONCURRENCY = 10, 32, 8


def chat(client: httpx.Client, messages, **extra) -> tuple[float, httpx.Response]:
    t0 = time.perf_counter()
    r = client.post(f"{URL}/v1/chat/completions", json={"model": MODEL_NAME, "messages": messages, "max_tokens": 16,
                                                         "temperature": 0, **extra}, timeout=300)
    return time.perf_counter() - t0, r


def bare_p50(model_path: str) -> float:
    from vllm import LLM, SamplingParams

    from s2d_ray.config import EngineConfig
    from s2d_ray.engine import engine_args, prepare_cpu_env

    cfg = EngineConfig()
    prepare_cpu_env(cfg)
    llm = LLM(**engine_args(model_path, cfg))
    params = SamplingParams(temperature=0, max_tokens=16)
    llm.chat(PROMPT, params, use_tqdm=False)
    times = []
    for _ in range(N_LATENCY):
        t0 = time.perf_counter()
        llm.chat(PROMPT, params, use_tqdm=False)
        times.append(time.perf_counter() - t0)
    llm.llm_engine.engine_core.shutdown()  # else its engine process keeps this one from exiting
    return statistics.median(times)


def main() -> dict[str, float]:
    global MODEL_NAME
    from s2d_ray.models import resolve_model

    demo = ROOT / "runs" / "demo" / "model"
    model = str(demo) if (demo / "config.json").exists() else "smollm2-135m-instruct"
    MODEL_NAME = "demo" if model == str(demo) else Path(model).name
    proc = served.start(model, PORT, BENCH_DIR / "serving-serve.log")
    try:
        with httpx.Client() as client:
            chat(client, PROMPT)
            served = statistics.median(chat(client, PROMPT)[0] for _ in range(N_LATENCY))
            statuses: list[int] = []
            lat: list[float] = []

            def one(_):
                t, r = chat(client, PROMPT)
                return t, r.status_code

            t0 = time.perf_counter()
            with ThreadPoolExecutor(CONCURRENCY) as pool:
                for t, code in pool.map(one, range(N_LOAD)):
                    lat.append(t)
                    statuses.append(code)
            wall = time.perf_counter() - t0
    finally:
        served.stop(proc, signal.SIGTERM)
        subprocess.run([str(Path(sys.executable).parent / "ray"), "stop", "--force"], capture_output=True)
    bare = bare_p50(resolve_model(model))
    ratio = round(served / bare, 3)
    lat.sort()
    print(f"P5 served p50 {served * 1000:.0f} ms / bare vLLM p50 {bare * 1000:.0f} ms = {ratio}  (target <= 1.15; {MODEL_NAME}, 16 tokens)")
    print(f"  load: {N_LOAD} requests at concurrency {CONCURRENCY}: p50 {statistics.median(lat) * 1000:.0f} ms, "
          f"p95 {lat[int(0.95 * len(lat)) - 1] * 1000:.0f} ms, {N_LOAD / wall:.2f} req/s, "
          f"5xx: {sum(s >= 500 for s in statuses)}, statuses {dict((s, statuses.count(s)) for s in set(statuses))}")
    return {"P5": ratio}


MODEL_NAME = "model"

if __name__ == "__main__":
    write("serving", main())
