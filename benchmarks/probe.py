"""Probe a research setting on a task's TRAIN split (never test): System 1 (greedy, on the
method's System 1 prompts) against the System 2 method's majority over n samples, with mean
generated tokens, on one real engine. The paper configs' headers cite these figures. Prints
each accuracy with its 95% Wilson interval, System 2 minus System 1 with a paired bootstrap
interval, and, for a closed answer set (yes/no, A/B), each system's answers per label, so a
constant answer is seen as one.

    python benchmarks/probe.py --task "task:last_letter?k=3" --method rar2 --n 16 --samples 4 --temperature 0.7
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    from collections import Counter

    from s2d_ray.config import EngineConfig
    from s2d_ray.engine import Engine, Sampling
    from s2d_ray.programs import get_program, system1_program
    from s2d_ray.programs.driver import run_program
    from s2d_ray.evaluation.metrics import paired_bootstrap_delta, wilson
    from s2d_ray.programs.filters import majority_vote
    from s2d_ray.tasks import get_task, parse_task_source

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", required=True, help="task:NAME?params (its train split is probed)")
    p.add_argument("--method", required=True)
    p.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    p.add_argument("--n", type=int, default=16, help="train inputs")
    p.add_argument("--samples", type=int, default=4)
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--max-tokens", type=int, default=256, help="per System 2 step")
    p.add_argument("--system1-max-tokens", type=int, default=64)
    p.add_argument("--seed", type=int, default=0, help="seed of the task's train-split generation")
    args = p.parse_args()

    name, params = parse_task_source(args.task)
    task = get_task(name)
    rows = task.generate(args.n, args.seed, "train", **params)
    items = [{"input": r["input"], "answer": r["answer"], "meta": r} for r in rows]
    engine = Engine(args.model, EngineConfig(max_model_len=2048, cpu_kv_cache_gib=2))
    s1, s2 = system1_program(args.method, task.spec), get_program(args.method, task.spec)

    async def both():
        one = Sampling(0.0, 1.0, args.system1_max_tokens)
        two = Sampling(args.temperature, 0.95, args.max_tokens)
        first = [run_program(s1.run(i, 1), lambda c: engine.complete(c, one)) for i in items]
        second = [run_program(s2.run(i, args.samples), lambda c: engine.complete(c, two)) for i in items]
        return await asyncio.gather(asyncio.gather(*first), asyncio.gather(*second))

    system1, system2 = asyncio.run(both())
    engine.shutdown()
    ok1, ok2, said1, said2 = {}, {}, Counter(), Counter()
    for i, (item, (a,), samples) in enumerate(zip(items, system1, system2)):
        row = {**item["meta"], "input": item["input"], "answer": item["answer"]}
        ok1[i] = bool(task.spec.is_correct(a.reasoning[-1], row))
        answer, _, _ = majority_vote(samples, s2.answers)
        ok2[i] = answer is not None and bool(task.spec.is_correct(answer, row))
        said1[s1.extract(a.reasoning[-1])] += 1
        said2[answer] += 1
    n = len(items)
    tokens2 = sum(s.tokens for ss in system2 for s in ss) / n
    tokens1 = sum(a.tokens for (a,) in system1) / n

    def acc(ok: dict[int, bool]) -> str:
        lo, hi = wilson(sum(ok.values()), n)
        return f"{sum(ok.values())}/{n} = {100 * sum(ok.values()) / n:.0f}% [{100 * lo:.0f}, {100 * hi:.0f}]"

    delta, (lo, hi), _ = paired_bootstrap_delta(ok1, ok2)
    print(f"PROBE {args.model} {args.task} {args.method} n={n} train (seed {args.seed}): System 1 {acc(ok1)} "
          f"({tokens1:.0f} tok), System 2 majority of {args.samples} at T={args.temperature} {acc(ok2)} "
          f"({tokens2:.0f} tok per input); System 2 - System 1 {100 * delta:+.0f} [{100 * lo:+.0f}, {100 * hi:+.0f}] points")
    if task.spec.answers.closed_set:
        print(f"  answers: System 1 {dict(said1.most_common())}, System 2 {dict(said2.most_common())} "
              f"(gold {dict(Counter(str(r['answer']) for r in rows).most_common())})")


if __name__ == "__main__":
    main()
