"""Stage 4: fine-tune the same model on the distillation set (Ray Train + DeepSpeed ZeRO).

``train(cfg)`` is what `s2d train` runs: distill/ (the files its manifest names) -> Ray Data,
shuffled -> TorchTrainer workers, each tokenizing its shard with the model's chat template
(``loop.train_loop_per_worker``) -> model/ (+ adapter/).

Ray Train keeps the run's latest checkpoint in ``checkpoints/train-<hash>/`` while it trains, so
a stopped or crashed run resumes there; once ``model/`` is written they are deleted (the model,
its adapter and ``s2d_train.json`` are what a finished run keeps).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Any

from s2d_ray.config import RunConfig
from s2d_ray.errors import S2DError
from s2d_ray.outputs import OutputDir, manifest_files, read_manifest
from s2d_ray.recipe import RECIPE_FILE, recipe_of
from s2d_ray.runtime import init_ray
from s2d_ray.progress import StageProgress
from s2d_ray.training.loop import EXPORT_DIR, STATE_FILE, steps_per_epoch, train_loop_per_worker

TRAIN_INFO = "s2d_train.json"


def train_hash(cfg: RunConfig, out: OutputDir | None = None) -> str:
    """The training stage's config hash: its settings and the distillation set it reads (whose
    hash its manifest holds; sampling is not re-derived here)."""
    out = out or OutputDir(cfg.output_dir)
    manifest = read_manifest(out, "distill")
    if manifest is None:
        raise S2DError(f"train: {out.uri('distill')} has no distillation set (no _manifest.json); run `s2d sample` first")
    return cfg.stage_hash("train", extra={"samples": manifest["config_hash"]})


def _copy_tree(src: str, out: OutputDir, name: str) -> None:
    """Replace ``out/name`` with local directory ``src`` (atomic rename on local disks)."""
    import pyarrow.fs as pafs

    if isinstance(out.fs, pafs.LocalFileSystem):
        final = out.path(name)
        tmp = f"{final}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(src, tmp)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
    else:
        out.remove(name)
        pafs.copy_files(src, out.path(name), destination_filesystem=out.fs)


def train(cfg: RunConfig) -> dict[str, Any]:
    """Train on ``output_dir/distill``; write ``model/`` (and ``adapter/`` for LoRA)."""
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    tc = cfg.train
    out = OutputDir(cfg.output_dir)
    key = train_hash(cfg, out)
    if out.exists("model", TRAIN_INFO) and out.read_json("model", TRAIN_INFO).get("config_hash") == key:
        info = out.read_json("model", TRAIN_INFO)
        info["skipped"] = True
        for part in ("model", "adapter"):  # a model trained before recipes existed gains its own
            if out.exists(part, "config.json" if part == "model" else "adapter_config.json") and not out.exists(part, RECIPE_FILE):
                out.write_text(recipe_of(cfg).model_dump_json(indent=2), part, RECIPE_FILE)
        return info
    distill = read_manifest(out, "distill")
    n = distill["rows"]
    if n == 0:
        raise S2DError(f"train: {out.uri('distill')} has no rows; sample more inputs or lower sample.filter.min_agreement")
    if n < tc.num_workers:
        raise S2DError(f"train: the distillation set has {n} rows, fewer than train.num_workers={tc.num_workers}; "
                       "sample more inputs or lower sample.filter.min_agreement")
    from s2d_ray.datasets import read_results

    init_ray(cfg.locations("output_dir", "model"))
    # Shuffled before the workers take the CPUs (its tasks would wait behind them); each worker
    # tokenizes the rows of its own shard (training.examples.tokenize), so tokenization scales
    # with the workers.
    ds = read_results(out, manifest_files(out, "distill"), ["input", "target"]).random_shuffle(seed=tc.seed).materialize()
    system_prompt = cfg.task_spec.system_prompt if cfg.task_spec else None
    total_steps = steps_per_epoch(n, tc.num_workers, tc) * tc.epochs
    with StageProgress("train", total_steps, unit="steps") as board:  # rank 0 reports its steps
        trainer = TorchTrainer(
            train_loop_per_worker,
            train_loop_config={"train": tc.model_dump(), "model": cfg.model, "n_examples": n, "system_prompt": system_prompt,
                               "progress": board},
            scaling_config=ray.train.ScalingConfig(
                num_workers=tc.num_workers, use_gpu=tc.use_gpu, resources_per_worker={"CPU": tc.cpus_per_worker}
            ),
            run_config=ray.train.RunConfig(
                name=f"train-{key}",
                storage_path=out.uri("checkpoints"),
                failure_config=ray.train.FailureConfig(max_failures=tc.max_failures),
                checkpoint_config=ray.train.CheckpointConfig(num_to_keep=1),  # registered only once written whole
            ),
            torch_config=TorchConfig(backend="nccl" if tc.use_gpu else "gloo"),
            datasets={"train": ds},
        )
        result = trainer.fit()
    if result.error or result.checkpoint is None:
        raise RuntimeError(f"training failed: {result.error}")
    with tempfile.TemporaryDirectory() as tmp:
        local = result.checkpoint.to_directory(tmp)
        with open(os.path.join(local, STATE_FILE)) as f:
            state = json.load(f)
        history = state.get("history", [])
        info = {
            "config_hash": key,
            "parent": distill["config_hash"],
            "model": cfg.model,
            "finetune": tc.finetune,
            "zero_stage": tc.zero_stage,
            "precision": state.get("precision"),  # as resolved by the workers (train.precision auto)
            "examples": n,
            "steps": state["step"],
            "first_loss": history[0]["loss"] if history else None,
            "last_loss": history[-1]["loss"] if history else None,
            "history": history,
        }
        export = os.path.join(local, EXPORT_DIR)
        with open(os.path.join(export, "model", TRAIN_INFO), "w") as f:
            json.dump(info, f, indent=2)
        recipe = recipe_of(cfg).model_dump_json(indent=2)  # what a server asks the model (s2d_ray.recipe)
        for part in ("model", "adapter") if tc.finetune == "lora" else ("model",):
            with open(os.path.join(export, part, RECIPE_FILE), "w") as f:
                f.write(recipe)
        if tc.finetune == "lora":
            _copy_tree(os.path.join(export, "adapter"), out, "adapter")
        _copy_tree(os.path.join(export, "model"), out, "model")
    out.remove("checkpoints", f"train-{key}")  # model/ holds the result; a rerun of this config skips
    if out.is_empty("checkpoints"):  # other configs' unfinished runs stay, to resume
        out.remove("checkpoints")
    return info


def format_result(info: dict[str, Any]) -> str:
    if info.get("skipped"):
        return f"train: model/ is up to date for this config ({info['config_hash']}); skipped"
    hist = info["history"]
    tps = [h["tokens_per_s"] for h in hist[1:]] or [h["tokens_per_s"] for h in hist]
    step_s = [h["step_time_s"] for h in hist[1:]] or [h["step_time_s"] for h in hist]
    return (
        f"train: {info['finetune']} ZeRO-{info['zero_stage']} on {info['examples']} examples, {info['steps']} steps; "
        f"loss {info['first_loss']:.4f} -> {info['last_loss']:.4f}; "
        f"{sum(step_s) / len(step_s):.2f} s/step, {sum(tps) / len(tps):.0f} tok/s"
    )
