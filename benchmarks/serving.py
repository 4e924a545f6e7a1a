"""P5: serving overhead, where it goes, and a bounded load test (the adaptive mode's curve:
benchmarks/adaptive.py).

P5 = p50 latency of POST /v1/chat/completions through `s2d serve` (Ray Serve + vLLM async
     engine) / p50 of a bare `vllm.LLM.chat` call with the same prompt and parameters.
     Target <= 1.15.
Hops: the same request at each hop, one request at a time, each adding one layer:
       bare      vLLM's sync LLM.chat in this process (P5's denominator)
       async     vLLM's AsyncLLM as the server holds it (s2d_ray.engine.Engine), token ids in
       logprob   + the chosen token's logprob (System 1's confidence in the s2d extension)
       api       + s2d's API logic (OpenAIServer.chat: request model, chat template, budget,
                 parsed answer, response body)
       http      + FastAPI + uvicorn over TCP in this process (routing, validation, middleware, JSON)
       served    + Ray Serve: `s2d serve` in its own process (proxy, router, replica actor call)
     Each difference of p50s is that layer's cost. One engine runs at a time (two vLLM engines on
     2 cores slow each other: the served p50 read 1127 ms with this process's engines loaded,
     200 ms alone), so the run has phases: bare, served, the in-process hops (async..http, in
     rounds of one request per hop, so a slow moment lands on all of them), bare again; the two
     bare p50s show the drift between phases. Every engine computes on this machine's cores
     (the replica's cpu_threads, this process's OMP_NUM_THREADS).
Load test: a fixed number of requests at fixed concurrency on 127.0.0.1 against `s2d serve`;
p50/p95, throughput, count of 5xx (must be 0). One run; run: python benchmarks/serving.py
"""

from __future__ import annotations

import asyncio
import os
import signal
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import served  # noqa: E402  (s2d serve started and stopped as the tests do)
from results import BENCH_DIR, ROOT, write  # noqa: E402

PORT = 8397
PROMPT = [{"role": "user", "content": "What is the capital of France? Answer with just the answer."}]
THREADS = len(os.sched_getaffinity(0))
ROUNDS, N_LOAD, CONCURRENCY = 30, 32, 8
HOPS = {
    "bare": "bare vLLM LLM.chat (sync)",
    "async": "vLLM AsyncLLM (s2d_ray.engine.Engine)",
    "logprob": "+ the chosen token's logprob",
    "api": "+ s2d API logic (OpenAIServer.chat)",
    "http": "+ FastAPI + uvicorn over TCP",
    "served": "+ Ray Serve (s2d serve: proxy, router, replica)",
}


def body(model_name: str) -> dict[str, Any]:
    """The request every hop answers (raw messages: no prompt recipe, as the bare call)."""
    return {"model": model_name, "messages": PROMPT, "max_tokens": 16, "temperature": 0, "s2d_prompt": "raw"}


def post(client: httpx.Client, url: str, json: dict[str, Any]) -> httpx.Response:
    r = client.post(f"{url}/v1/chat/completions", json=json, timeout=300)
    r.raise_for_status()
    return r


def bare(model: str) -> list[float]:
    """Seconds per request of vLLM's sync LLM.chat, alone on the machine."""
    from vllm import LLM

    from s2d_ray.config import EngineConfig
    from s2d_ray.engine import engine_args, prepare_cpu_env, sampling_params
    from s2d_ray.models import resolve_model

    cfg = EngineConfig()
    prepare_cpu_env(cfg)
    llm = LLM(**engine_args(resolve_model(model), cfg))  # as the benchmarks' bare engines start
    greedy = sampling_params(temperature=0, max_tokens=16)
    llm.chat(PROMPT, greedy, use_tqdm=False)
    times = []
    for _ in range(ROUNDS):
        t0 = time.perf_counter()
        llm.chat(PROMPT, greedy, use_tqdm=False)
        times.append(time.perf_counter() - t0)
    llm.llm_engine.engine_core.shutdown()  # else its engine process keeps this one from exiting
    return times


def served_phase(model: str, model_name: str) -> tuple[list[float], tuple[list[float], list[int], float]]:
    """Seconds per request through `s2d serve` (alone on the machine), then the load test."""
    config = BENCH_DIR / "serving-serve.yaml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(f"cpu_threads: {THREADS}\n")  # a Serve replica's default is its num_cpus (1)
    proc = served.start(model, PORT, BENCH_DIR / "serving-serve.log", "--config", str(config))
    url = f"http://127.0.0.1:{PORT}"
    try:
        with httpx.Client() as client:
            post(client, url, body(model_name))
            times = []
            for _ in range(ROUNDS):
                t0 = time.perf_counter()
                post(client, url, body(model_name))
                times.append(time.perf_counter() - t0)
        return times, load_test(url, model_name)
    finally:
        served.stop(proc, signal.SIGTERM)
        subprocess.run([str(Path(sys.executable).parent / "ray"), "stop", "--force"], capture_output=True)


async def in_process(model: str, model_name: str) -> dict[str, list[float]]:
    """Seconds per request at the in-process hops (async..http), ROUNDS rounds of one request per
    hop (order rotated), over one engine."""
    import uvicorn

    from s2d_ray.engine import sampling_params
    from s2d_ray.serving.api import build_api
    from s2d_ray.serving.app import replica_server
    from s2d_ray.serving.protocol import ChatRequest
    from s2d_ray.serving.settings import ServeSettings

    server = replica_server(ServeSettings(model_dir=model, model_name=model_name))  # as a replica builds it
    engine = server.engine
    http = uvicorn.Server(uvicorn.Config(build_api(server), host="127.0.0.1", port=PORT + 1, log_level="warning"))
    serving = asyncio.create_task(http.serve())
    while not http.started:
        await asyncio.sleep(0.05)
    request = body(model_name)
    ids = engine.chat_ids(PROMPT)
    greedy = sampling_params(temperature=0, max_tokens=16)
    with_logprob = sampling_params(temperature=0, max_tokens=16, logprobs=0)
    local = f"http://127.0.0.1:{PORT + 1}"
    with httpx.Client() as client:
        calls: dict[str, Callable[[], Any]] = {
            "async": lambda: engine.generate(ids, greedy),
            "logprob": lambda: engine.generate(ids, with_logprob),
            "api": lambda: server.chat(ChatRequest.model_validate(request)),
            "http": lambda: asyncio.to_thread(post, client, local, request),  # the loop serves it meanwhile
        }
        for name in calls:  # warm each hop once
            await calls[name]()
        times: dict[str, list[float]] = {name: [] for name in calls}
        order = list(calls)
        for r in range(ROUNDS):
            for name in order[r % len(order):] + order[:r % len(order)]:
                t0 = time.perf_counter()
                await calls[name]()
                times[name].append(time.perf_counter() - t0)
    http.should_exit = True
    await serving
    engine.shutdown()
    return times


def load_test(url: str, model_name: str) -> tuple[list[float], list[int], float]:
    with httpx.Client() as client:
        def one(_: int) -> tuple[float, int]:
            t0 = time.perf_counter()
            r = client.post(f"{url}/v1/chat/completions", json=body(model_name), timeout=300)
            return time.perf_counter() - t0, r.status_code

        t0 = time.perf_counter()
        with ThreadPoolExecutor(CONCURRENCY) as pool:
            results = list(pool.map(one, range(N_LOAD)))
    return sorted(t for t, _ in results), [c for _, c in results], time.perf_counter() - t0


def main() -> dict[str, float]:
    demo = ROOT / "runs" / "demo" / "model"
    model = str(demo) if (demo / "config.json").exists() else "smollm2-135m-instruct"
    model_name = "demo" if model == str(demo) else Path(model).name
    times = {"bare": bare(model)}
    times["served"], (lat, statuses, wall) = served_phase(model, model_name)
    times.update(asyncio.run(in_process(model, model_name)))
    bare_again = statistics.median(bare(model))
    p50 = {name: statistics.median(times[name]) for name in HOPS}
    bare_mean = (p50["bare"] + bare_again) / 2
    ratio = round(p50["served"] / bare_mean, 3)
    print(f"engines on {THREADS} threads each; {model_name}, 16 tokens greedy; p50 of {ROUNDS} requests per hop")
    print(f"P5 served p50 {p50['served'] * 1000:.0f} ms / bare vLLM p50 {bare_mean * 1000:.0f} ms = {ratio}  (target <= 1.15; "
          f"bare measured first and last: {p50['bare'] * 1000:.0f} and {bare_again * 1000:.0f} ms)")
    print("  hops (p50 ms, and what the layer adds):")
    prev = None
    for name, label in HOPS.items():
        value = bare_mean if name == "bare" else p50[name]
        step = "" if prev is None else f"  ({(value - prev) * 1000:+.1f} ms)"
        print(f"    {label:<50} {value * 1000:7.1f} ms{step}")
        prev = value
    print(f"  load: {N_LOAD} requests at concurrency {CONCURRENCY}: p50 {statistics.median(lat) * 1000:.0f} ms, "
          f"p95 {lat[int(0.95 * len(lat)) - 1] * 1000:.0f} ms, {N_LOAD / wall:.2f} req/s, "
          f"5xx: {sum(s >= 500 for s in statuses)}, statuses {dict((s, statuses.count(s)) for s in set(statuses))}")
    return {"P5": ratio, **{f"p50_{name}_ms": round(v * 1000, 1) for name, v in p50.items()},
            "p50_bare_last_ms": round(bare_again * 1000, 1)}


if __name__ == "__main__":
    os.environ["OMP_NUM_THREADS"] = str(THREADS)  # before vLLM is imported: this process's engines
    write("serving", main())
