"""Ray Train + DeepSpeed on the small real model: loss goes down, a killed worker resumes
from its checkpoint with the step count continuing, and the export loads in vLLM."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from s2d_ray.models import resolve_model
from s2d_ray.outputs import OutputDir, write_manifest

from s2d_ray.tasks import get_task

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
S2D = str(Path(sys.executable).parent / "s2d")


def _distill_set(out: Path, n: int = 16) -> None:
    """A distillation set in the layout `s2d sample` writes (targets: the facts' answers)."""
    rows = get_task("biased_qa").generate(n, 0, "train", variants=["unbiased"])
    table = pa.Table.from_pylist([{"id": r["id"], "input": r["input"], "target": r["answer"], "method": "s2a",
                                   "n_samples": 4, "agreement": 1.0, "model": "smollm2-135m-instruct",
                                   "config_hash": "test", "source": "test"} for r in rows])
    (out / "distill").mkdir(parents=True)
    pq.write_table(table, out / "distill" / "part-00000.parquet")
    write_manifest(OutputDir(str(out)), "distill", config_hash="test", parent="test", rows=n, files=["part-00000.parquet"])


def _train(out: Path, *sets: str) -> subprocess.Popen:
    args = [S2D, "train", str(ROOT / "configs" / "smoke.yaml"), "--set", f"output_dir={out}", *[a for s in sets for a in ("--set", s)]]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _registered(ckpts: Path) -> tuple[int, Path | None]:
    """The step and directory of the latest checkpoint Ray Train has registered (0, None if none yet)."""
    for snap in ckpts.glob("*/checkpoint_manager_snapshot.json"):
        try:
            latest = json.loads(snap.read_text()).get("latest_checkpoint_result") or {}
        except json.JSONDecodeError:  # being rewritten
            return 0, None
        return int(latest.get("metrics", {}).get("step", 0)), snap.parent / latest["checkpoint_dir_name"]
    return 0, None


def _model_states_bytes(ckpts: Path) -> int:
    """The size of a registered checkpoint's largest model-states file (Ray Train may delete the
    checkpoint while it is read: then the next one's)."""
    while True:
        _, d = _registered(ckpts)
        sizes = []
        for f in d.rglob("*model_states.pt") if d else ():
            try:
                sizes.append(f.stat().st_size)
            except FileNotFoundError:
                break
        else:
            if sizes:
                return max(sizes)
        time.sleep(0.2)


def _worker_pids() -> list[int]:
    ps = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return [int(line.split()[0]) for line in ps.splitlines() if "ray::RayTrainWorker" in line]


def _vllm_answer(model_dir: Path) -> str:
    """The exported model's greedy answer to a question, from vLLM in a fresh process."""
    code = (
        "import asyncio, sys\n"
        "from s2d_ray.config import EngineConfig\n"
        "from s2d_ray.engine import Engine, Sampling\n"
        "from s2d_ray.programs.base import Call, user\n"
        "engine = Engine(sys.argv[1], EngineConfig(max_model_len=512, cpu_kv_cache_gib=1))\n"
        "out = asyncio.run(engine.complete(Call(user('What is the capital of France?')), Sampling(max_tokens=16)))\n"
        "assert out[0].tokens > 0, out\n"
        "print('ANSWER=' + repr(out[0].text))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(model_dir)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    (answer,) = re.findall(r"^ANSWER=(.*)$", proc.stdout, re.M)
    return answer


@pytest.mark.parametrize("zero_stage,precision", [(2, "fp32"), (3, "bf16")])
def test_full_finetune_lowers_loss_and_export_loads_in_vllm(tmp_path, zero_stage, precision):
    _distill_set(tmp_path)
    proc = _train(tmp_path, "train.finetune=full", f"train.zero_stage={zero_stage}", "train.epochs=4",
                  "train.learning_rate=5e-5", f"train.precision={precision}", "train.micro_batch_size=4")
    log, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, log[-3000:]
    info = json.loads((tmp_path / "model" / "s2d_train.json").read_text())
    losses = [h["loss"] for h in info["history"]]
    assert info["steps"] == 8 and len(losses) == 8
    assert sum(losses[-2:]) / 2 < sum(losses[:2]) / 2, losses
    assert (tmp_path / "model" / "model.safetensors").exists() and not (tmp_path / "adapter").exists()
    assert not (tmp_path / "checkpoints").exists()  # deleted once model/ is written
    assert "Paris" in _vllm_answer(tmp_path / "model")


def test_lora_zero3_killed_worker_resumes_and_export_loads_in_vllm(tmp_path):
    _distill_set(tmp_path)
    proc = _train(tmp_path, "train.finetune=lora", "train.zero_stage=3", "train.epochs=3", "train.micro_batch_size=2",
                  "train.checkpoint_every_steps=1", "train.learning_rate=1e-3")
    deadline = time.time() + 600
    while time.time() < deadline and _registered(tmp_path / "checkpoints")[0] < 2:
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        time.sleep(0.5)
    # a LoRA checkpoint holds the adapter's weights, not the frozen base (with it, each of the
    # 2 ranks' model-states files holds its half of the 135M model's 270 MB; without, 0.4 MB)
    base = (Path(resolve_model("smollm2-135m-instruct")) / "model.safetensors").stat().st_size
    assert _model_states_bytes(tmp_path / "checkpoints") < base / 20, base
    pids = _worker_pids()
    assert pids, "no train worker to kill"
    os.kill(pids[0], signal.SIGKILL)
    log, _ = proc.communicate(timeout=900)
    (tmp_path / "train.log").write_text(log)
    assert proc.returncode == 0, log[-3000:]
    # rank 0's "resumed from checkpoint" line is in the run's log file (s2d_ray.console), not on the terminal
    log += "".join(f.read_text(errors="replace") for f in (tmp_path / "logs").glob("train-*.log"))
    resumed = [int(s) for s in re.findall(r"resumed from checkpoint at step (\d+)", log)]
    assert resumed and resumed[0] >= 1, log[-3000:]
    info = json.loads((tmp_path / "model" / "s2d_train.json").read_text())
    steps = [h["step"] for h in info["history"]]
    assert steps == list(range(1, info["steps"] + 1)), steps  # continued, not restarted
    assert info["steps"] == 12
    assert (tmp_path / "adapter" / "adapter_config.json").exists()
    assert not (tmp_path / "checkpoints").exists()
    assert _vllm_answer(tmp_path / "model").strip("'\" ")


@pytest.mark.parametrize("zero_stage", [2, 3])
def test_lora_checkpoint_restores_the_trained_weights_without_the_frozen_base(zero_stage):
    """save_checkpoint/load_checkpoint (what resume runs) on a real DeepSpeed engine: an engine
    built with another seed gets back every trainable weight and the step count, and the
    model-states file holds the adapter (+ the tied lm_head DeepSpeed keeps), not the base."""
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "checkpoint_roundtrip.py"), "lora", str(zero_stage),
                           str(29530 + zero_stage)], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    (line,) = re.findall(r"^RESULT=(.*)$", proc.stdout, re.M)
    result = json.loads(line)
    assert result["trainable"] > 0 and result["differed_before_load"] > 0, result  # the load has something to restore
    assert result["equal_after_load"] and result["steps"] == [2, 2], result
    base = (Path(resolve_model("smollm2-135m-instruct")) / "model.safetensors").stat().st_size
    states = max(v for k, v in result["bytes"].items() if k.endswith("model_states.pt"))
    assert states < base / 3, (result["bytes"], base)  # with the frozen base: 270 MB (ZeRO-2 and 3 alike)
