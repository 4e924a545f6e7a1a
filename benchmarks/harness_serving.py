"""lm-evaluation-harness against `s2d serve` over HTTP, as a user's evaluation pipeline would run it.

`local-completions` (log-likelihoods via /v1/completions with echo + logprobs) on a BIG-bench
multiple-choice task, batch_size prompts per request; then `local-chat-completions` (generation
via /v1/chat/completions) on the same documents as a generate-until task, to show the chat path
works for the harness; then the same log-likelihood task through `s2d broader`'s lm-eval model on
an engine in this process (no HTTP, every request at once): what the engine alone needs, the floor
a server can approach. Before all of them, the log-likelihood task against an instant canned
server (no model, FAKE answers of the real shape and size, made in this process), once untimed
(lm-eval's one-time costs) and once timed: what lm-eval's client side costs by itself
(tokenizing, requests, parsing), which no server can remove. The server's
engine and this one compute on this machine's cores. Prints the wall time of each and writes
runs/bench/harness_serving.json.

A batch of prompts in one /v1/completions request used to be awaited one prompt at a time; it
now runs concurrently (the engine batches the prompts). `--server-tree OLD_TREE` serves from
another checkout of s2d_ray (its directory first on the server's PYTHONPATH; this script and the
harness stay as they are), e.g. the tree before that change:
  git worktree add /tmp/s2d-before b44fe9a^ && python benchmarks/harness_serving.py --server-tree /tmp/s2d-before
and the figures land in runs/bench/harness_serving-<tree name>.json.

Run: python benchmarks/harness_serving.py [--model smollm2-135m-instruct] [--task bigbench:hyperbaton] [--n 100]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import served  # noqa: E402  (s2d serve started and stopped as the tests do)
from results import BENCH_DIR, write  # noqa: E402

PORT = 8399
THREADS = len(os.sched_getaffinity(0))  # the server's engine and this process's compute on this machine's cores
URL = f"http://127.0.0.1:{PORT}"


def main() -> None:
    import lm_eval
    from lm_eval.tasks import TaskManager

    from s2d_ray.evaluation.harness import harness_name, prepare_bigbench
    from s2d_ray.models import resolve_model

    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--task", default="bigbench:hyperbaton")
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--server-tree", help="serve s2d_ray from this checkout instead (its path first on PYTHONPATH)")
    args = ap.parse_args()
    import yaml

    root = prepare_bigbench([args.task], args.n, 0)
    name = harness_name(args.task)
    # The same documents as a generate-until task, for the chat endpoint (chat models give no log-likelihoods).
    spec = yaml.safe_load((root / f"{name}.yaml").read_text())
    gen_dir = BENCH_DIR / "harness-gen"
    gen_dir.mkdir(parents=True, exist_ok=True)
    (gen_dir / f"{name}_gen.yaml").write_text(yaml.safe_dump({
        **{k: spec[k] for k in ("dataset_path", "dataset_kwargs", "test_split", "doc_to_text")}, "task": f"{name}_gen",
        "output_type": "generate_until", "doc_to_target": "{{choices[gold]}}",
        "metric_list": [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True}]}))
    tokenizer = resolve_model(args.model)
    tasks = TaskManager(include_path=[str(root), str(gen_dir)])
    model_name = Path(args.model).name
    env = None
    if args.server_tree:
        tree = Path(args.server_tree).resolve()
        assert (tree / "s2d_ray" / "__init__.py").exists(), f"--server-tree {tree}: no s2d_ray package there"
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tree), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    config = BENCH_DIR / "harness_serving-serve.yaml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(f"cpu_threads: {THREADS}\n")  # a Serve replica's default is its num_cpus (1)
    # lm-eval's one-time costs (imports, the tokenizer, the dataset cache) are paid by an untimed
    # run against the canned server, so no timed run below carries them.
    client_alone(model_name, name, tasks, tokenizer, args.batch_size)
    client_wall = client_alone(model_name, name, tasks, tokenizer, args.batch_size)
    proc = served.start(args.model, PORT, BENCH_DIR / "harness_serving-serve.log", "--config", str(config), env=env)
    try:
        t0 = time.perf_counter()
        ll = lm_eval.simple_evaluate(
            model="local-completions", tasks=[name], task_manager=tasks, batch_size=args.batch_size,
            model_args=f"model={model_name},base_url={URL}/v1/completions,tokenizer={tokenizer},tokenizer_backend=huggingface,"
                       f"num_concurrent=1,max_retries=1,tokenized_requests=False")
        ll_wall = time.perf_counter() - t0
        t0 = time.perf_counter()
        chat = lm_eval.simple_evaluate(
            model="local-chat-completions", tasks=[f"{name}_gen"], task_manager=tasks, apply_chat_template=True,
            gen_kwargs="max_gen_toks=16,until=['\\n']", limit=8,
            model_args=f"model={model_name},base_url={URL}/v1/chat/completions,num_concurrent=1,max_retries=1")
        chat_wall = time.perf_counter() - t0
    finally:
        served.stop(proc, signal.SIGTERM)
        subprocess.run([str(Path(sys.executable).parent / "ray"), "stop", "--force"], capture_output=True)
    floor_wall, floor_acc = in_process(args.model, name, tasks)
    acc = ll["results"][name]["acc,none"]
    print(f"server: {args.server_tree or 'this tree'}")
    print(f"local-completions, {args.task}, {args.n} documents, batch_size {args.batch_size}: "
          f"{ll_wall:.1f} s, acc {acc:.3f}")
    print(f"in-process floor (s2d broader's EngineLM on the same engine settings, no HTTP, all requests at once): "
          f"{floor_wall:.1f} s, acc {floor_acc:.3f}")
    print(f"lm-eval's client alone (local-completions against an instant canned server, FAKE logprobs, no model): "
          f"{client_wall:.1f} s; the server's share of the local-completions run: {ll_wall - client_wall:.1f} s")
    print(f"local-chat-completions, {args.task}, 8 documents generated: {chat_wall:.1f} s "
          f"(exact_match {chat['results'][f'{name}_gen']['exact_match,none']:.3f})")
    label = f"-{Path(args.server_tree).resolve().name}" if args.server_tree else ""
    write(f"harness_serving{label}", {"local_completions_s": round(ll_wall, 1), "local_chat_completions_s": round(chat_wall, 1),
                                      "acc": round(acc, 4), "in_process_s": round(floor_wall, 1),
                                      "client_alone_canned_s": round(client_wall, 1),
                                      "local_completions_over_in_process": round(ll_wall / floor_wall, 2)})


def in_process(model: str, name: str, tasks) -> tuple[float, float]:
    """The same task through `s2d broader`'s lm-eval model over an engine in this process: what
    the engine alone needs (seconds, acc), the floor of what serving can reach."""
    import asyncio

    import lm_eval

    from s2d_ray.config import EngineConfig
    from s2d_ray.engine import Engine
    from s2d_ray.evaluation.harness import engine_lm

    loop = asyncio.new_event_loop()
    engine = Engine(model, EngineConfig())  # the server's engine settings (ServeSettings' default)
    try:
        t0 = time.perf_counter()
        result = lm_eval.simple_evaluate(model=engine_lm(engine, loop), tasks=[name], task_manager=tasks)
        return time.perf_counter() - t0, result["results"][name]["acc,none"]
    finally:
        engine.shutdown()
        loop.close()


def client_alone(model_name: str, name: str, tasks, tokenizer: str, batch_size: int) -> float:
    """Seconds lm-eval's local-completions takes on the task against a server that answers at once:
    a thread in this process returning, per prompt, echo logprobs of the prompt's real token count
    (so bodies have about the real size) with made-up tokens and values. Measures the client side
    only (and the canned server's little work, which shares the client's interpreter)."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    import lm_eval
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer)

    class Canned(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's name)
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            prompts = body["prompt"] if isinstance(body["prompt"], list) else [body["prompt"]]
            choices = []
            for i, prompt in enumerate(prompts):
                tokens = ["x"] * (len(tok(prompt)["input_ids"]) + 1)  # the real count; no decoding (it runs under the client's GIL)
                choices.append({"index": i, "text": prompt + "x", "finish_reason": "length", "logprobs": {
                    "tokens": tokens, "token_logprobs": [None] + [-1.0] * (len(tokens) - 1),
                    "top_logprobs": [None] + [{"x": -1.0}] * (len(tokens) - 1),
                    "text_offset": list(range(len(tokens)))}})
            out = json.dumps({"id": "c", "object": "text_completion", "model": model_name, "choices": choices,
                              "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Canned)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        t0 = time.perf_counter()
        lm_eval.simple_evaluate(
            model="local-completions", tasks=[name], task_manager=tasks, batch_size=batch_size,
            model_args=f"model={model_name},base_url=http://127.0.0.1:{server.server_port}/v1/completions,"
                       f"tokenizer={tokenizer},tokenizer_backend=huggingface,num_concurrent=1,max_retries=1,"
                       f"tokenized_requests=False")
        return time.perf_counter() - t0
    finally:
        server.shutdown()


if __name__ == "__main__":
    os.environ["OMP_NUM_THREADS"] = str(THREADS)  # before vLLM is imported: the in-process engine
    main()
