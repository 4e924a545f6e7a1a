"""vLLM's async engine (continuous batching) for the server, plus System 1 / System 2 /
adaptive answering on top of it. No Ray here: the deployment in app.py holds one."""

from __future__ import annotations

import asyncio
import math
import uuid
from dataclasses import dataclass
from typing import Any, AsyncIterator

from s2d_ray.config import EngineConfig
from s2d_ray.programs import Program
from s2d_ray.programs.base import Call, Completion, ProgramRun
from s2d_ray.sampling.engine import engine_args, prepare_cpu_env
from s2d_ray.sampling.filters import majority_vote


@dataclass
class Generated:
    texts: list[tuple[str, str]]  # (text, finish_reason) per choice
    prompt_tokens: int
    completion_tokens: int
    confidence: float | None = None


def confidence_of(logprobs: list[float]) -> float:
    """Geometric-mean probability of the generated tokens (1.0 = certain)."""
    return math.exp(sum(logprobs) / len(logprobs)) if logprobs else 0.0


class AsyncEngine:
    """One ``AsyncLLM`` with optional LoRA adapters, addressed by name."""

    def __init__(self, model_path: str, cfg: EngineConfig, adapters: dict[str, str]) -> None:
        prepare_cpu_env(cfg)
        from transformers import AutoTokenizer
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.lora.request import LoRARequest
        from vllm.v1.engine.async_llm import AsyncLLM

        args = AsyncEngineArgs(
            **engine_args(model_path, cfg), enable_prefix_caching=True, enable_lora=bool(adapters),
            max_loras=max(1, len(adapters)), max_lora_rank=64,
        )
        self.llm = AsyncLLM.from_engine_args(args)
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.max_model_len = cfg.max_model_len
        self.loras = {name: LoRARequest(name, i + 1, path) for i, (name, path) in enumerate(sorted(adapters.items()))}

    def chat_ids(self, messages: list[dict[str, str]]) -> list[int]:
        text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return self.tokenizer.encode(text, add_special_tokens=False)

    def text_ids(self, prompt: str) -> list[int]:
        return self.tokenizer.encode(prompt)

    def _params(self, n: int, temperature: float, top_p: float, max_tokens: int, stop: Any, logprobs: bool, delta: bool = False):
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        return SamplingParams(
            n=n, temperature=temperature, top_p=top_p if temperature > 0 else 1.0, max_tokens=max_tokens, stop=stop,
            logprobs=0 if logprobs else None,
            output_kind=RequestOutputKind.DELTA if delta else RequestOutputKind.FINAL_ONLY,
        )

    async def generate(self, ids: list[int], *, n: int = 1, temperature: float = 0.0, top_p: float = 1.0,
                       max_tokens: int = 256, stop: Any = None, adapter: str | None = None, logprobs: bool = False) -> Generated:
        from vllm.inputs import TokensPrompt

        params = self._params(n, temperature, top_p, max_tokens, stop, logprobs)
        final = None
        async for out in self.llm.generate(TokensPrompt(prompt_token_ids=ids), params, uuid.uuid4().hex,
                                           lora_request=self.loras.get(adapter) if adapter else None):
            final = out
        assert final is not None
        conf = None
        if logprobs:
            first = final.outputs[0]
            conf = confidence_of([lp[t].logprob for lp, t in zip(first.logprobs or [], first.token_ids)])
        return Generated([(o.text, o.finish_reason or "stop") for o in final.outputs], len(ids),
                         sum(len(o.token_ids) for o in final.outputs), conf)

    async def stream(self, ids: list[int], *, n: int = 1, temperature: float = 0.0, top_p: float = 1.0,
                     max_tokens: int = 256, stop: Any = None, adapter: str | None = None) -> AsyncIterator[tuple[int, str, str | None, int]]:
        """Yields (choice index, new text, finish_reason or None, new token count)."""
        from vllm.inputs import TokensPrompt

        params = self._params(n, temperature, top_p, max_tokens, stop, False, delta=True)
        async for out in self.llm.generate(TokensPrompt(prompt_token_ids=ids), params, uuid.uuid4().hex,
                                           lora_request=self.loras.get(adapter) if adapter else None):
            for o in out.outputs:
                yield o.index, o.text, o.finish_reason, len(o.token_ids)

    async def _complete(self, call: Call, temperature: float, max_tokens: int, adapter: str | None) -> list[Completion]:
        ids = self.chat_ids(call.messages)
        room = self.max_model_len - len(ids)
        if room < 1:
            return [Completion("", 0, "prompt too long")] * call.n
        temp = temperature if call.temperature is None else call.temperature
        g = await self.generate(ids, n=call.n, temperature=temp, top_p=0.95 if temp > 0 else 1.0,
                                max_tokens=min(call.max_tokens or max_tokens, room), adapter=adapter)
        per = g.completion_tokens // max(1, len(g.texts))
        return [Completion(t, per) for t, _ in g.texts]

    async def run_program(self, run: ProgramRun, temperature: float, max_tokens: int, adapter: str | None):
        """Drive a System 2 program generator with concurrent engine calls per step."""
        try:
            calls = next(run)
            while True:
                outs = await asyncio.gather(*(self._complete(c, temperature, max_tokens, adapter) for c in calls))
                calls = run.send(list(outs))
        except StopIteration as stop:
            return stop.value

    async def system2(self, question: str, program: Program, samples: int, max_tokens: int,
                      adapter: str | None) -> tuple[str, int, float]:
        """Run a System 2 program on ``question``; (majority answer, generated tokens, agreement)."""
        result = await self.run_program(program.run({"input": question, "meta": {}}, samples), 0.7, max_tokens, adapter)
        answer, agreement, _ = majority_vote(result, program.answers)
        return answer or "", sum(s.tokens for s in result), agreement
