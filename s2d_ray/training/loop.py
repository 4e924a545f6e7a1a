"""The per-worker training loop: DeepSpeed ZeRO over gloo (CPU) or NCCL (GPU), same code.

Runs inside a Ray Train worker. Checkpoints are DeepSpeed checkpoints (each rank writes its
own shard files) reported through ``ray.train.report``; a restarted worker group resumes
from the latest one with the step count continuing. A LoRA checkpoint holds the trainable
weights and their optimizer states only: the frozen base weights are the model's own files.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from typing import Any

from s2d_ray.config import TrainConfig
from s2d_ray.training.examples import collate, tokenize

STATE_FILE = "s2d_state.json"
EXPORT_DIR = "export"


def deepspeed_config(tc: TrainConfig, total_steps: int) -> dict[str, Any]:
    """The DeepSpeed config for ``tc`` (ZeRO stage, precision, offload, AdamW + schedule);
    ``tc.precision`` is resolved (train_precision) before this is called."""
    if tc.precision not in ("bf16", "fp32"):
        raise ValueError(f"deepspeed_config needs a resolved precision, got {tc.precision!r} (see train_precision)")
    warmup = max(1, int(tc.warmup_ratio * total_steps))
    schedulers = {
        "cosine": {"type": "WarmupCosineLR", "params": {"total_num_steps": total_steps, "warmup_num_steps": warmup, "cos_min_ratio": 0.0}},
        "linear": {"type": "WarmupDecayLR", "params": {"total_num_steps": total_steps, "warmup_num_steps": warmup, "warmup_min_lr": 0.0, "warmup_max_lr": tc.learning_rate}},
        "constant": {"type": "WarmupLR", "params": {"warmup_num_steps": warmup, "warmup_min_lr": 0.0, "warmup_max_lr": tc.learning_rate, "warmup_type": "linear"}},
    }
    zero: dict[str, Any] = {"stage": tc.zero_stage}
    if tc.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu"}
    if tc.offload_params and tc.zero_stage == 3:
        zero["offload_param"] = {"device": "cpu"}
    if tc.zero_stage == 3:
        zero["stage3_gather_16bit_weights_on_model_save"] = False
    return {
        "train_micro_batch_size_per_gpu": tc.micro_batch_size,
        "gradient_accumulation_steps": tc.gradient_accumulation_steps,
        "gradient_clipping": 1.0,
        "zero_optimization": zero,
        "bf16": {"enabled": tc.precision == "bf16"},
        "optimizer": {
            "type": "AdamW",
            "params": {"lr": tc.learning_rate, "weight_decay": tc.weight_decay, "torch_adam": not tc.offload_optimizer},
        },
        "scheduler": schedulers[tc.lr_scheduler],
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }


def train_precision(requested: str, resumed: str | None = None) -> str:
    """The precision this run trains in: a resumed run's checkpoint's; ``auto``: bf16 where rank 0
    computes it natively (s2d_ray.engine.native_bf16), else fp32, broadcast so every rank agrees."""
    if resumed:
        return resumed
    if requested != "auto":
        return requested
    import torch.distributed as dist

    from s2d_ray.engine import native_bf16

    choice = ["bf16" if native_bf16() else "fp32"]
    if dist.is_available() and dist.is_initialized():
        dist.broadcast_object_list(choice, src=0)
    return choice[0]


def steps_per_epoch(n_examples: int, world: int, tc: TrainConfig) -> int:
    """Optimizer steps per epoch on every worker (Ray Data splits rows equally)."""
    micro_batches = math.ceil((n_examples // world) / tc.micro_batch_size)
    return max(1, micro_batches // tc.gradient_accumulation_steps)


def _load_model(model_path: str, tc: TrainConfig, ds_config: dict[str, Any]):
    import torch
    from transformers import AutoModelForCausalLM

    dtype = torch.bfloat16 if tc.precision == "bf16" else torch.float32
    keep = None
    if tc.zero_stage == 3:  # partition weights while loading (STACK.md: not our own zero.Init)
        from transformers.integrations import HfDeepSpeedConfig

        keep = HfDeepSpeedConfig(ds_config)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype)
    if tc.finetune == "lora":
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(
            model,
            LoraConfig(r=tc.lora_r, lora_alpha=tc.lora_alpha, lora_dropout=tc.lora_dropout,
                       target_modules=tc.lora_target_modules, task_type="CAUSAL_LM"),
        )
    return model, keep


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train entry point. ``config``: train (TrainConfig dict), model (as configured: resolved
    here, on this worker's node), n_examples, system_prompt (the task's, or None), progress (the
    driver's s2d_ray.progress board, or None). Rows arrive
    as text and are tokenized here, by the model's own chat template."""
    tc = TrainConfig(**config["train"])
    if not tc.use_gpu:  # DeepSpeed otherwise probes for GPUs and warns that it found none
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    import deepspeed
    import ray.train
    import torch

    from s2d_ray.models import resolve_model

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    checkpoint = ray.train.get_checkpoint()
    state = None
    if checkpoint:
        with checkpoint.as_directory() as d:
            with open(os.path.join(d, STATE_FILE)) as f:
                state = json.load(f)
        if state.get("final"):
            return  # training finished; the latest checkpoint already holds the export
    tc = tc.model_copy(update={"precision": train_precision(tc.precision, (state or {}).get("precision"))})
    torch.manual_seed(tc.seed)
    per_epoch = steps_per_epoch(config["n_examples"], world, tc)
    total_steps = per_epoch * tc.epochs
    ds_config = deepspeed_config(tc, total_steps)

    from transformers import AutoTokenizer

    model_path = resolve_model(config["model"])
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    model, _keep = _load_model(model_path, tc, ds_config)
    if tc.use_gpu:
        torch.cuda.set_device(ray.train.torch.get_device())
    engine, _, _, _ = deepspeed.initialize(
        model=model, model_parameters=[p for p in model.parameters() if p.requires_grad], config=ds_config
    )

    step, epoch, done_in_epoch, history = 0, 0, 0, []
    if checkpoint:
        with checkpoint.as_directory() as d:
            load_checkpoint(engine, d)
        step, epoch, done_in_epoch = state["step"], state["epoch"], state["step_in_epoch"]
        history = state["history"]
        if rank == 0 and config.get("progress") is not None:
            config["progress"].put.remote({"done": step})
        if rank == 0:
            print(f"[s2d train] resumed from checkpoint at step {step} (epoch {epoch})", flush=True)

    shard = ray.train.get_dataset_shard("train")
    every = tc.checkpoint_every_steps
    while epoch < tc.epochs and step < total_steps:
        batches = shard.iter_torch_batches(
            batch_size=tc.micro_batch_size,
            collate_fn=lambda b: collate(tokenize(tokenizer, b, tc.max_length, config.get("system_prompt")), pad_id),
            local_shuffle_buffer_size=256,
            local_shuffle_seed=tc.seed + epoch,
        )
        micro, in_epoch, t0, tokens = 0, 0, time.perf_counter(), 0
        for batch in batches:
            if in_epoch >= per_epoch:
                break
            if in_epoch < done_in_epoch:  # resumed mid-epoch: skip what the checkpoint covers
                micro += 1
                if micro % tc.gradient_accumulation_steps == 0:
                    in_epoch += 1
                continue
            batch = {k: v.to(engine.device) for k, v in batch.items()}
            loss = engine(**batch).loss
            engine.backward(loss)
            engine.step()
            tokens += int(batch["attention_mask"].sum())
            micro += 1
            if micro % tc.gradient_accumulation_steps:
                continue
            step, in_epoch = step + 1, in_epoch + 1
            elapsed = time.perf_counter() - t0
            metrics = {"step": step, "epoch": epoch, "loss": float(loss.detach().float()),
                       "lr": float(engine.get_lr()[0]), "step_time_s": elapsed,
                       "tokens_per_s": tokens * world / elapsed if elapsed else 0.0}
            history.append(metrics)
            last_of_epoch = in_epoch >= per_epoch
            if last_of_epoch or (every and step % every == 0):
                state = {"step": step, "epoch": epoch + int(last_of_epoch),
                         "step_in_epoch": 0 if last_of_epoch else in_epoch, "history": history,
                         "precision": tc.precision}
                _report_checkpoint(engine, tc, metrics, state)
            else:
                ray.train.report(metrics)
            if rank == 0 and config.get("progress") is not None:
                config["progress"].put.remote({"done": step, "loss": metrics["loss"]})
            if rank == 0:
                print(f"[s2d train] step {step}/{total_steps} epoch {epoch + 1} loss {metrics['loss']:.4f} "
                      f"lr {metrics['lr']:.2e} {metrics['step_time_s']:.2f}s/step {metrics['tokens_per_s']:.0f} tok/s", flush=True)
            t0, tokens = time.perf_counter(), 0
        epoch, done_in_epoch = epoch + 1, 0
    _export(engine, tc, model_path, step, history)


def save_checkpoint(engine, tc: TrainConfig, directory: str, tag: str) -> None:
    """This rank's part of a DeepSpeed checkpoint in ``directory``. LoRA: without the frozen
    base weights (a full copy of the model per checkpoint otherwise: 3 GB at 1.5B parameters),
    which ``load_checkpoint`` keeps from the model as loaded."""
    engine.save_checkpoint(directory, tag=tag, exclude_frozen_parameters=tc.finetune == "lora")


def load_checkpoint(engine, directory: str) -> None:
    """Restore what ``save_checkpoint`` wrote: trained weights, optimizer and scheduler states
    (not strict: a LoRA checkpoint has no frozen weights)."""
    engine.load_checkpoint(directory, load_module_strict=False)


def _report_checkpoint(engine, tc: TrainConfig, metrics: dict[str, Any], state: dict[str, Any]) -> None:
    import ray.train

    with tempfile.TemporaryDirectory() as d:
        save_checkpoint(engine, tc, d, f"step{state['step']}")
        if ray.train.get_context().get_world_rank() == 0:
            with open(os.path.join(d, STATE_FILE), "w") as f:
                json.dump(state, f)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d))


def gathered_state_dict(engine, rank: int) -> dict[str, Any] | None:
    """The full (unpartitioned) state dict on rank 0's CPU, ``None`` on other ranks.

    ZeRO-3 partitions every weight across ranks: DeepSpeed gathers them one layer at a time
    to rank 0 and moves each to CPU before the next, so no rank ever holds the whole model
    on its accelerator (a 7B model would not fit a 24 GB card twice). ZeRO-2 keeps whole
    weights on every rank: rank 0 copies its own."""
    if engine.zero_optimization_partition_weights():
        return engine._zero3_consolidated_16bit_state_dict()  # every rank takes part
    if rank != 0:
        return None
    return {k: v.detach().to("cpu", copy=True) for k, v in engine.module.state_dict().items()}


def _export(engine, tc: TrainConfig, model_path: str, step: int, history: list[dict[str, Any]]) -> None:
    """Report a final checkpoint holding a Hugging Face model (merged, for LoRA) and, for
    LoRA, the adapter, written by rank 0 from the gathered weights."""
    import ray.train

    rank = ray.train.get_context().get_world_rank()
    state = gathered_state_dict(engine, rank)
    with tempfile.TemporaryDirectory() as d:
        if rank == 0:
            _save_hf(engine.module, state, tc, model_path, os.path.join(d, EXPORT_DIR))
            with open(os.path.join(d, STATE_FILE), "w") as f:
                json.dump({"step": step, "final": True, "history": history, "precision": tc.precision}, f)
        ray.train.report({"step": step, "final": 1}, checkpoint=ray.train.Checkpoint.from_directory(d) if rank == 0 else None)


def _save_hf(module, state: dict[str, Any], tc: TrainConfig, model_path: str, export: str) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    unset_hf_deepspeed_config()  # rank 0 alone: a ZeRO-3 partitioned load here would wait on the other ranks

    base = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    if tc.finetune == "lora":
        from peft import PeftModel, get_peft_model_state_dict

        adapter_dir = os.path.join(export, "adapter")
        module.save_pretrained(adapter_dir, state_dict=get_peft_model_state_dict(module, state_dict=state))
        merged = PeftModel.from_pretrained(base, adapter_dir).merge_and_unload()
    else:
        base.load_state_dict(state)
        merged = base
    merged = merged.to(torch.bfloat16)
    merged.config.dtype = torch.bfloat16
    model_dir = os.path.join(export, "model")
    merged.save_pretrained(model_dir, safe_serialization=True)
    AutoTokenizer.from_pretrained(model_path).save_pretrained(model_dir)
    try:
        GenerationConfig.from_pretrained(model_path).save_pretrained(model_dir)
    except OSError:
        pass
    for name in ("ORIGIN.txt",):
        if os.path.exists(os.path.join(model_path, name)):
            shutil.copy(os.path.join(model_path, name), model_dir)
