"""One process (world size 1): train 2 steps, ``save_checkpoint``, load it into an engine built
with another seed, and print (RESULT=json) whether the trained weights came back and the saved
files' sizes. Run by tests/test_train_real.py: ``python checkpoint_roundtrip.py FINETUNE STAGE PORT``."""

import glob
import json
import os
import sys
import tempfile

os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=sys.argv[3], RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")

import deepspeed  # noqa: E402
import torch  # noqa: E402
from deepspeed.utils import safe_get_full_fp32_param  # noqa: E402

from s2d_ray.config import TrainConfig  # noqa: E402
from s2d_ray.models import resolve_model  # noqa: E402
from s2d_ray.training.loop import _load_model, deepspeed_config, load_checkpoint, save_checkpoint  # noqa: E402

tc = TrainConfig(finetune=sys.argv[1], zero_stage=int(sys.argv[2]), precision="bf16", micro_batch_size=2, learning_rate=1e-2)
ds_config = deepspeed_config(tc, 10)
path = resolve_model("smollm2-135m-instruct")


def engine(seed: int):
    torch.manual_seed(seed)
    model, keep = _load_model(path, tc, ds_config)
    e, *_ = deepspeed.initialize(model=model, model_parameters=[p for p in model.parameters() if p.requires_grad], config=ds_config)
    return e, keep


def trained(e) -> dict[str, torch.Tensor]:
    return {n: safe_get_full_fp32_param(p).clone() for n, p in e.module.named_parameters() if p.requires_grad}


a, _keep_a = engine(0)
ids = torch.randint(0, 1000, (2, 16))
for _ in range(2):
    a.backward(a(input_ids=ids, attention_mask=torch.ones_like(ids), labels=ids).loss)
    a.step()
want = trained(a)
with tempfile.TemporaryDirectory() as d:
    save_checkpoint(a, tc, d, "step2")
    sizes = {os.path.basename(f): os.path.getsize(f) for f in glob.glob(f"{d}/step2/*")}
    b, _keep_b = engine(1)
    before = trained(b)
    load_checkpoint(b, d)
    got = trained(b)
print("RESULT=" + json.dumps({
    "trainable": len(want),
    "differed_before_load": sum(not torch.equal(before[k], want[k]) for k in want),
    "equal_after_load": all(torch.equal(got[k], want[k]) for k in want),
    "steps": [a.global_steps, b.global_steps],
    "bytes": sizes,
}))
