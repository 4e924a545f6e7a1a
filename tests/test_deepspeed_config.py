"""The DeepSpeed config built from TrainConfig (s2d_ray.training.loop.deepspeed_config)."""

import subprocess
import sys

import pytest

from s2d_ray.config import TrainConfig
from s2d_ray.training.loop import deepspeed_config


def ds(total_steps=100, **kw):
    return deepspeed_config(TrainConfig(**{"precision": "bf16", **kw}), total_steps)


@pytest.mark.parametrize("stage", [2, 3])
def test_zero_stage_copied(stage):
    assert ds(zero_stage=stage)["zero_optimization"]["stage"] == stage


def test_stage2_defaults_have_no_offload():
    cfg = ds(zero_stage=2)
    assert cfg["zero_optimization"] == {"stage": 2}
    assert cfg["optimizer"]["type"] == "AdamW"
    assert cfg["optimizer"]["params"]["torch_adam"] is True


def test_offload_optimizer():
    cfg = ds(zero_stage=2, offload_optimizer=True)
    assert cfg["zero_optimization"]["offload_optimizer"] == {"device": "cpu"}
    assert cfg["optimizer"]["params"]["torch_adam"] is False  # DeepSpeed's CPU Adam for offloaded states


def test_offload_params_only_at_stage3():
    assert "offload_param" not in ds(zero_stage=2, offload_params=True)["zero_optimization"]
    assert ds(zero_stage=3, offload_params=True)["zero_optimization"]["offload_param"] == {"device": "cpu"}
    assert "offload_param" not in ds(zero_stage=3)["zero_optimization"]


def test_stage3_does_not_gather_weights_on_save():
    assert ds(zero_stage=3)["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is False
    assert "stage3_gather_16bit_weights_on_model_save" not in ds(zero_stage=2)["zero_optimization"]


@pytest.mark.parametrize("precision,enabled", [("bf16", True), ("fp32", False)])
def test_bf16_iff_precision(precision, enabled):
    assert ds(precision=precision)["bf16"] == {"enabled": enabled}


def test_auto_precision_is_resolved_before_the_deepspeed_config(monkeypatch):
    """train.precision auto: bf16 where the worker computes it natively, fp32 on an AVX2-only CPU;
    a resumed run keeps its checkpoint's whatever this machine has; an unresolved one is refused."""
    from s2d_ray import engine
    from s2d_ray.training.loop import train_precision

    with pytest.raises(ValueError, match="resolved precision"):
        ds(precision="auto")
    for native, expected in [(True, "bf16"), (False, "fp32")]:
        monkeypatch.setattr(engine, "native_bf16", lambda native=native: native)
        assert train_precision("auto") == expected
        assert train_precision("fp32") == "fp32" and train_precision("bf16") == "bf16"
        assert train_precision("auto", resumed="bf16") == "bf16"


@pytest.mark.parametrize(
    "name,ds_type,has_total",
    [("cosine", "WarmupCosineLR", True), ("linear", "WarmupDecayLR", True), ("constant", "WarmupLR", False)],
)
def test_scheduler(name, ds_type, has_total):
    sched = ds(total_steps=200, lr_scheduler=name, warmup_ratio=0.1, learning_rate=3e-5)["scheduler"]
    assert sched["type"] == ds_type
    assert sched["params"]["warmup_num_steps"] == 20
    if has_total:
        assert sched["params"]["total_num_steps"] == 200
    else:
        assert "total_num_steps" not in sched["params"]
    if name != "cosine":
        assert sched["params"]["warmup_max_lr"] == 3e-5


@pytest.mark.parametrize("ratio,total,warmup", [(0.0, 100, 1), (0.05, 10, 1), (0.05, 100, 5), (0.33, 10, 3)])
def test_warmup_steps_at_least_one(ratio, total, warmup):
    assert ds(total_steps=total, warmup_ratio=ratio)["scheduler"]["params"]["warmup_num_steps"] == warmup


def test_batch_sizes_and_optimizer_copied():
    cfg = ds(micro_batch_size=3, gradient_accumulation_steps=7, learning_rate=1e-4, weight_decay=0.01)
    assert cfg["train_micro_batch_size_per_gpu"] == 3
    assert cfg["gradient_accumulation_steps"] == 7
    assert cfg["optimizer"]["params"]["lr"] == 1e-4
    assert cfg["optimizer"]["params"]["weight_decay"] == 0.01


def test_loop_imports_without_deepspeed_or_torch():
    """deepspeed, torch and Ray are imported inside the worker function only."""
    code = ("import sys; import s2d_ray.training.loop; "
            "print(sorted(m for m in ('deepspeed', 'torch', 'ray', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
