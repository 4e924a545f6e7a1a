"""GPU check: the smoke loop on CUDA (vLLM engines on a GPU each, DeepSpeed ZeRO-3 over NCCL,
Ray Serve on a GPU), with the figures a note needs. Run it on a machine with NVIDIA GPUs
(driver >= 580, see cluster/README.md) as `make gpu-check`, or against a cluster with
RAY_ADDRESS set. Writes runs/gpu-check/gpu_check.json; exits 2 without a CUDA GPU.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def serve_p50(model_dir: str, requests: int = 10) -> dict[str, float]:
    """Deploy the distilled model with one GPU per replica; p50 latency of short chat answers."""
    import httpx
    from ray import serve

    from s2d_ray.serving.app import build_app

    start = time.perf_counter()
    serve.start(http_options={"host": "127.0.0.1", "port": 8399})
    serve.run(build_app({"model_dir": model_dir, "model_name": "gpu-check", "num_gpus": 1, "num_cpus": 1}),
              name="gpu-check", route_prefix="/")
    ready = time.perf_counter() - start
    body = {"model": "gpu-check", "messages": [{"role": "user", "content": "What is 12 + 7?"}], "max_tokens": 16}
    times = []
    for _ in range(requests):
        t = time.perf_counter()
        r = httpx.post("http://127.0.0.1:8399/v1/chat/completions", json=body, timeout=120)
        r.raise_for_status()
        times.append(time.perf_counter() - t)
    serve.shutdown()
    return {"ready_s": round(ready, 1), "p50_s": round(sorted(times)[len(times) // 2], 4)}


def main() -> int:
    import torch

    if not torch.cuda.is_available():
        print("gpu-check: no CUDA GPU visible (torch.cuda.is_available() is False)", file=sys.stderr)
        return 2
    from s2d_ray.config import load_config
    from s2d_ray.outputs import OutputDir
    from s2d_ray.pipeline import run

    gpus = torch.cuda.device_count()
    out_dir = str(ROOT / "runs" / "gpu-check")
    cfg = load_config(ROOT / "configs" / "smoke.yaml", [
        f"output_dir={out_dir}", "sample.actors.num_gpus=1", "sample.actors.cpu_threads=null",
        "train.use_gpu=true", f"train.num_workers={min(gpus, 2)}", "train.zero_stage=3"])
    start = time.perf_counter()
    report = run(cfg)
    wall = time.perf_counter() - start
    out = OutputDir(out_dir)
    summary = out.read_json("samples_summary.json")
    figures = {
        "device": torch.cuda.get_device_name(0), "gpus": gpus, "torch": torch.__version__,
        "cuda": torch.version.cuda, "wall_s": round(wall, 1),
        "sampling_tokens_per_s": summary["this_run"]["tokens_per_s"],
        "train": report.get("training"),
        "accuracy": {k: v["accuracy"] for k, v in report["systems"].items()},
        "serve": serve_p50(out.uri("model")),
    }
    out.write_text(json.dumps(figures, indent=2), "gpu_check.json")
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
