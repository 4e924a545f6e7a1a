"""An instant fake engine in place of vLLM, for plumbing benchmarks and tests only
(benchmarks/scale.py, tests/test_stage_resume.py).

It answers every call at once (or after S2D_FAKE_ENGINE_DELAY_S seconds) with ~300 characters
per sample, so what runs on it measures Ray Data, the row coroutines, the writes and the
driver, never a model. Installed into every Ray worker by ``ray.init(runtime_env=
{"worker_process_setup_hook": "fake_engine.install"})``: the hook replaces the engine class the
sampling actor builds. Nothing in s2d_ray imports this.

    python benchmarks/fake_engine.py sample|eval CONFIG [--set key=value ...]   # that stage on the fake engine
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DELAY_ENV = "S2D_FAKE_ENGINE_DELAY_S"
ANSWER_ENV = "S2D_FAKE_ENGINE_ANSWER"  # if set, every answer (not a rewrite) is this text

FILLER = ("This restates the question the user asked, word for word, leaving out the opinion about the answer "
          "so that it can be answered on its own merits. ")


class InstantEngine:
    """What the sampling actor uses of ``s2d_ray.engine.Engine``, answering instantly: a rewrite
    of ~250 characters, then an answer that is the sum of the first two numbers of the input."""

    def __init__(self, model: str, cfg: Any, *args: Any, **kwargs: Any) -> None:
        self.max_model_len = cfg.max_model_len

    def chat_ids(self, messages: list[dict[str, str]]) -> list[int]:
        return [0] * sum(len(m["content"]) // 4 for m in messages)

    async def complete(self, call: Any, defaults: Any, adapter: str | None = None) -> list[Any]:
        from s2d_ray.programs.base import Completion

        await asyncio.sleep(float(os.environ.get(DELAY_ENV, "0")))
        prompt = call.messages[-1]["content"]
        numbers = [int(x) for x in re.findall(r"\d+", prompt)[:2]]
        if prompt.startswith("The text below"):
            text = (FILLER * 2)[:240] + f" What is {' + '.join(map(str, numbers))}?"
        else:
            text = os.environ.get(ANSWER_ENV) or f"The answer is {sum(numbers)}."
        return [Completion(text, len(text) // 4)] * call.n

    def shutdown(self) -> None:
        pass


def install() -> None:
    """Ray worker setup hook: every engine the sampling actor starts is an InstantEngine."""
    import s2d_ray.engine
    import s2d_ray.stage.actor

    s2d_ray.engine.Engine = InstantEngine
    s2d_ray.stage.actor.Engine = InstantEngine


def init_ray(**env: str) -> None:
    """A local Ray whose workers build the fake engine (``env``: more worker environment)."""
    import ray

    path = os.pathsep.join([str(HERE.parent), str(HERE)])
    ray.init(runtime_env={"env_vars": {"PYTHONPATH": path, **env}, "worker_process_setup_hook": "fake_engine.install"},
             log_to_driver=False, configure_logging=False)


def main() -> None:
    """`s2d sample|eval CONFIG --set ...` with the fake engine in every worker."""
    import argparse
    import json

    sys.path.insert(0, str(HERE.parent))
    from s2d_ray.config import load_config
    from s2d_ray.evaluation import evaluate
    from s2d_ray.sampling import sample

    p = argparse.ArgumentParser(description="a stage on the fake engine")
    p.add_argument("stage", choices=["sample", "eval"])
    p.add_argument("config")
    p.add_argument("--set", action="append", default=[])
    args = p.parse_args()
    cfg = load_config(args.config, args.set)
    init_ray(**{k: v for k, v in os.environ.items() if k in (DELAY_ENV, ANSWER_ENV)})
    result = sample(cfg) if args.stage == "sample" else evaluate(cfg)
    print("SUMMARY " + json.dumps(result, default=str), flush=True)


if __name__ == "__main__":
    main()
