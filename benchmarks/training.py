"""P3: step time of `s2d train` (Ray Train + DeepSpeed ZeRO-2, 2 workers x 1 CPU) over a bare
single-process torch loop (2 threads) of the same model, LoRA config, global batch and data.
Target <= 1.10. Also prints tokens/s of both. One run; run: python benchmarks/training.py
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import ROOT, write  # noqa: E402

N_EXAMPLES = 64


def _distill(out: Path) -> list[dict]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from s2d_ray.tasks import get_task

    rows = get_task("biased_qa").generate(N_EXAMPLES, 0, "train")
    data = [{"id": r["id"], "input": r["input"], "target": r["answer"], "method": "s2a", "n_samples": 8,
             "agreement": 1.0, "model": "smollm2-135m-instruct", "config_hash": "bench", "source": "bench"} for r in rows]
    (out / "distill").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(data), out / "distill" / "part-00000.parquet")
    return data


def bare_loop(data: list[dict], tc, model_path: str) -> tuple[float, float]:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from s2d_ray.training.examples import collate, encode_example

    torch.set_num_threads(2)
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.bfloat16)
    model = get_peft_model(model, LoraConfig(r=tc.lora_r, lora_alpha=tc.lora_alpha, lora_dropout=tc.lora_dropout,
                                             target_modules=tc.lora_target_modules, task_type="CAUSAL_LM"))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=tc.learning_rate)
    enc = [encode_example(tok, d["input"], d["target"], tc.max_length) for d in data]
    global_batch = tc.micro_batch_size * tc.num_workers
    times, tokens = [], 0
    for i in range(0, len(enc) - global_batch + 1, global_batch):
        chunk = enc[i : i + global_batch]
        batch = collate({"input_ids": [e["input_ids"] for e in chunk], "labels": [e["labels"] for e in chunk]},
                        tok.pad_token_id)
        t0 = time.perf_counter()
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
        times.append(time.perf_counter() - t0)
        tokens += int(batch["attention_mask"].sum())
    steady = times[1:]
    return sum(steady) / len(steady), tokens / sum(times)


def main() -> dict[str, float]:
    from s2d_ray.config import load_config
    from s2d_ray.models import resolve_model
    from s2d_ray.training import train

    with tempfile.TemporaryDirectory() as tmp:
        data = _distill(Path(tmp))
        cfg = load_config(ROOT / "configs" / "smoke.yaml", [f"output_dir={tmp}", "train.epochs=1",
                                                             "train.micro_batch_size=4", "train.num_workers=2"])
        info = train(cfg)
        hist = info["history"][1:]
        ray_step = sum(h["step_time_s"] for h in hist) / len(hist)
        ray_tps = sum(h["tokens_per_s"] for h in hist) / len(hist)
    import ray

    ray.shutdown()
    bare_step, bare_tps = bare_loop(data, cfg.train, resolve_model(cfg.model))
    ratio = round(ray_step / bare_step, 3)
    print(f"P3 Ray Train + DeepSpeed ZeRO-{cfg.train.zero_stage} {ray_step:.3f} s/step ({ray_tps:.0f} tok/s, 2 workers x 1 CPU) / "
          f"bare torch {bare_step:.3f} s/step ({bare_tps:.0f} tok/s, 1 process x 2 threads) = {ratio}  (target <= 1.10; "
          f"{cfg.model}, LoRA r={cfg.train.lora_r}, global batch {cfg.train.micro_batch_size * cfg.train.num_workers})")
    return {"P3": ratio}


if __name__ == "__main__":
    write("training", main())
