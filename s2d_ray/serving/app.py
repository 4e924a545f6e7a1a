"""Ray Serve application: an OpenAI-compatible HTTP API over a vLLM async engine.

Endpoints: POST /v1/chat/completions, POST /v1/completions, GET /v1/models, GET /health.
Adaptive mode (``s2d_mode: auto``, per request or per deployment): the model answers
directly (System 1); when its answer-token confidence is below a threshold the System 2
program runs instead. The response's ``s2d`` field says which path answered.

``build_app(args)`` is the import path for `serve run` / `serve deploy` / RayService;
``serve_forever`` is `s2d serve`.
"""

from __future__ import annotations

import hmac
import json
import os
import time
from pathlib import Path
from typing import Any, AsyncIterator

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator
from ray import serve

from s2d_ray.config import EngineConfig, check_engine_placement
from s2d_ray.errors import S2DError, first_error
from s2d_ray.programs import Program, get_program
from s2d_ray.tasks import TaskSpec, task_spec
from s2d_ray.models import is_path, resolve_model
from s2d_ray.runtime import require_shared, thread_options
from s2d_ray.serving.protocol import (
    APIError, ChatRequest, CompletionRequest, Mode, chat_chunk, chat_response, completion_chunk,
    completion_response, new_id, parse,
)

MAX_BODY_BYTES = 4 * 1024 * 1024


class ServeSettings(BaseModel):
    """Serving configuration (serve/config.yaml `args`, or `s2d serve --config`)."""

    model_config = ConfigDict(extra="forbid")

    model_dir: str = Field(..., description="Model to serve: a run's model/ dir, built-in name, HF id or URI (s3://, gs://, ...).")
    model_name: str | None = Field(None, description="Name clients put in `model` (default: derived from model_dir).")
    api_key: str | None = Field(None, description="Require `Authorization: Bearer KEY` (default: $S2D_API_KEY, else open).")
    adapters: dict[str, str] = Field(default_factory=dict, description="LoRA adapters on the same base model: name -> dir or URI.")
    mode: Mode = Field("system1", description="Default answering mode: system1 | system2 | auto.")
    adaptive_threshold: float = Field(0.8, ge=0, le=1, description="auto: below this System 1 confidence, System 2 answers.")
    system2_method: str = Field("s2a", description="System 2 program for system2/auto modes (as sample.method).")
    task: str | TaskSpec | None = Field(
        None, description="Task spec (or built-in task name) whose answer kind the System 2 vote reads, as in the run config.")
    system2_samples: int = Field(4, ge=1, le=32, description="Samples of the System 2 program (majority vote).")
    system2_max_tokens: int = Field(128, ge=1, description="Max tokens per System 2 program step.")
    engine: EngineConfig = Field(default_factory=EngineConfig, description="vLLM engine settings.")
    min_replicas: int = Field(1, ge=0, description="Autoscaling lower bound.")
    max_replicas: int = Field(1, ge=1, description="Autoscaling upper bound.")
    target_ongoing_requests: float = Field(8, gt=0, description="Autoscaler target per replica.")
    max_ongoing_requests: int = Field(32, ge=1, description="Requests a replica accepts at once.")
    max_queued_requests: int = Field(64, ge=-1, description="Requests queued per caller before 503 (-1: unbounded).")
    num_cpus: float = Field(1, ge=0, description="CPUs per replica.")
    cpu_threads: int | None = Field(None, ge=1, description="Compute threads of a CPU replica's engine (OMP_NUM_THREADS); default: num_cpus, as Ray sets.")
    num_gpus: float = Field(0, ge=0, description="GPUs per replica (tensor_parallel_size on GPU clusters).")

    @model_validator(mode="after")
    def _placement(self) -> "ServeSettings":
        check_engine_placement("", self.num_gpus, self.engine.tensor_parallel_size)
        self.program()  # an unknown system2_method or task fails when the app is built, not at a request
        return self

    def program(self) -> Program:
        try:
            return get_program(self.system2_method, task_spec(self.task))
        except S2DError as e:
            raise ValueError(str(e).replace("sample.method", "system2_method")) from None

    @property
    def served_name(self) -> str:
        if self.model_name:
            return self.model_name
        path = Path(self.model_dir.rstrip("/"))
        return path.parent.name if path.name == "model" and path.parent.name else path.name


api = FastAPI(title="s2d-ray", description="OpenAI-compatible serving of System 2 distilled models")


def _error(e: APIError) -> JSONResponse:
    return JSONResponse(e.body(), status_code=e.status)


@serve.deployment(name="S2DServer")
@serve.ingress(api)
class S2DServer:
    """One vLLM async engine per replica; continuous batching across requests."""

    def __init__(self, settings: dict[str, Any]) -> None:
        from s2d_ray.serving.engine import AsyncEngine

        self.s = ServeSettings(**settings)
        self.key = self.s.api_key or os.environ.get("S2D_API_KEY") or None
        # Resolved on this replica's node: built-in names, local dirs and URIs (s3://, gs://).
        adapters = {name: resolve_model(path, marker="adapter_config.json") for name, path in self.s.adapters.items()}
        self.engine = AsyncEngine(resolve_model(self.s.model_dir), self.s.engine, adapters)
        self.program = self.s.program()
        self.created = int(time.time())

    # -- request plumbing -------------------------------------------------------------------
    def _auth(self, request: Request) -> None:
        if not self.key:
            return
        header = request.headers.get("authorization", "")
        token = header[7:] if header.lower().startswith("bearer ") else ""
        if not hmac.compare_digest(token.encode(), self.key.encode()):
            raise APIError(401, "invalid or missing API key (Authorization: Bearer KEY)", "authentication_error", code="invalid_api_key")

    async def _body(self, request: Request) -> Any:
        raw = await request.body()
        if len(raw) > MAX_BODY_BYTES:
            raise APIError(400, f"request body over {MAX_BODY_BYTES} bytes")
        try:
            return json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise APIError(400, f"invalid JSON body: {e}") from None

    def _adapter(self, model: str) -> str | None:
        if model == self.s.served_name:
            return None
        if model in self.s.adapters:
            return model
        known = ", ".join([self.s.served_name, *self.s.adapters])
        raise APIError(400, f"model {model!r} not found; served models: {known}", param="model", code="model_not_found")

    def _budget(self, n_prompt: int, requested: int | None) -> int:
        room = self.engine.max_model_len - n_prompt
        if room < 1 or (requested and requested > room):
            raise APIError(400, f"prompt ({n_prompt} tokens) + max_tokens ({requested or 1}) exceeds the context length "
                                f"{self.engine.max_model_len}", param="messages", code="context_length_exceeded")
        return requested or room

    # -- endpoints ----------------------------------------------------------------------------
    @api.get("/health")
    async def health(self) -> dict[str, str]:
        return {"status": "ok"}

    @api.get("/v1/models")
    async def models(self, request: Request) -> JSONResponse:
        try:
            self._auth(request)
        except APIError as e:
            return _error(e)
        names = [self.s.served_name, *self.s.adapters]
        data = [{"id": n, "object": "model", "created": self.created, "owned_by": "s2d-ray",
                 "parent": None if n == self.s.served_name else self.s.served_name} for n in names]
        return JSONResponse({"object": "list", "data": data})

    @api.post("/v1/chat/completions")
    async def chat(self, request: Request):
        try:
            self._auth(request)
            req = parse(ChatRequest, await self._body(request))
            adapter = self._adapter(req.model)
            messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in req.messages]
            ids = self.engine.chat_ids(messages)
            limit = self._budget(len(ids), req.token_limit)
            mode = req.s2d_mode or self.s.mode
            rid = new_id("chatcmpl")
            if mode == "system1" and req.stream:
                return self._sse(self._chat_stream(rid, req, ids, limit, adapter))
            body = await self._answer_chat(rid, req, messages, ids, limit, adapter, mode)
        except APIError as e:
            return _error(e)
        except (ValueError, TypeError) as e:  # parameters the engine refuses (e.g. SamplingParams checks)
            return _error(APIError(400, str(e)))
        if req.stream:
            return self._sse(self._replay_chat(body))
        return JSONResponse(body)

    @api.post("/v1/completions")
    async def completions(self, request: Request):
        try:
            self._auth(request)
            req = parse(CompletionRequest, await self._body(request))
            adapter = self._adapter(req.model)
            if isinstance(req.prompt, list):
                if len(req.prompt) != 1:
                    raise APIError(400, "prompt: exactly one prompt per request is supported", param="prompt")
                prompt = req.prompt[0]
            else:
                prompt = req.prompt
            ids = self.engine.text_ids(prompt)
            limit = self._budget(len(ids), req.token_limit or 16)
            rid = new_id("cmpl")
            kwargs = dict(n=req.n, temperature=req.temperature, top_p=req.top_p, max_tokens=limit, stop=req.stop, adapter=adapter)
            if req.stream:
                return self._sse(self._completion_stream(rid, req.model, ids, kwargs))
            g = await self.engine.generate(ids, **kwargs)
        except APIError as e:
            return _error(e)
        except (ValueError, TypeError) as e:
            return _error(APIError(400, str(e)))
        return JSONResponse(completion_response(rid, req.model, g.texts, g.prompt_tokens, g.completion_tokens))

    # -- answering ----------------------------------------------------------------------------
    async def _answer_chat(self, rid: str, req: ChatRequest, messages: list[dict[str, str]], ids: list[int],
                           limit: int, adapter: str | None, mode: str) -> dict[str, Any]:
        question = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
        s2d: dict[str, Any] = {"path": mode}
        tokens = 0
        if mode in ("system1", "auto"):
            g = await self.engine.generate(ids, n=req.n, temperature=req.temperature if mode == "system1" else 0.0,
                                           top_p=req.top_p, max_tokens=limit, stop=req.stop, adapter=adapter,
                                           logprobs=mode == "auto")
            tokens += g.completion_tokens
            if mode == "system1" or (g.confidence or 0.0) >= self.s.adaptive_threshold:
                s2d = {"path": "system1", **({"confidence": round(g.confidence, 4)} if mode == "auto" else {})}
                return chat_response(rid, req.model, g.texts, g.prompt_tokens, tokens, s2d if mode == "auto" else None)
            s2d = {"path": "system2", "confidence": round(g.confidence or 0.0, 4), "system1_answer": g.texts[0][0]}
        answer, s2_tokens, agreement = await self.engine.system2(
            question, self.program, self.s.system2_samples, self.s.system2_max_tokens, adapter)
        s2d.update({"path": "system2", "method": self.s.system2_method, "samples": self.s.system2_samples,
                    "agreement": round(agreement, 4)})
        return chat_response(rid, req.model, [(answer, "stop")] * req.n, len(ids), tokens + s2_tokens, s2d)

    # -- streaming ----------------------------------------------------------------------------
    @staticmethod
    def _sse(chunks: AsyncIterator[dict[str, Any]]) -> StreamingResponse:
        async def events() -> AsyncIterator[str]:
            try:
                async for chunk in chunks:
                    yield f"data: {json.dumps(chunk)}\n\n"
            except Exception as e:  # noqa: BLE001 - headers are sent: report in-stream, never hang
                yield f"data: {json.dumps(APIError(500, str(e), 'server_error').body())}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    async def _chat_stream(self, rid: str, req: ChatRequest, ids: list[int], limit: int, adapter: str | None):
        for i in range(req.n):
            yield chat_chunk(rid, req.model, i, {"role": "assistant", "content": ""}, None)
        completion = 0
        async for index, text, finish, new_tokens in self.engine.stream(
                ids, n=req.n, temperature=req.temperature, top_p=req.top_p, max_tokens=limit, stop=req.stop, adapter=adapter):
            completion += new_tokens
            if text:
                yield chat_chunk(rid, req.model, index, {"content": text}, None)
            if finish:
                yield chat_chunk(rid, req.model, index, {}, finish)
        yield {"id": rid, "object": "chat.completion.chunk", "created": int(time.time()), "model": req.model,
               "choices": [], "usage": {"prompt_tokens": len(ids), "completion_tokens": completion,
                                        "total_tokens": len(ids) + completion}}

    @staticmethod
    async def _replay_chat(body: dict[str, Any]):
        for choice in body["choices"]:
            i = choice["index"]
            yield chat_chunk(body["id"], body["model"], i, {"role": "assistant", "content": choice["message"]["content"]}, None)
            yield chat_chunk(body["id"], body["model"], i, {}, choice["finish_reason"])
        yield {"id": body["id"], "object": "chat.completion.chunk", "created": body["created"], "model": body["model"],
               "choices": [], "usage": body["usage"], **({"s2d": body["s2d"]} if "s2d" in body else {})}

    async def _completion_stream(self, rid: str, model: str, ids: list[int], kwargs: dict[str, Any]):
        async for index, text, finish, _ in self.engine.stream(ids, **kwargs):
            if text or finish:
                yield completion_chunk(rid, model, index, text, finish)


def build_app(args: dict[str, Any]) -> serve.Application:
    """Ray Serve application builder (`serve run s2d_ray.serving.app:build_app model_dir=...`)."""
    s = ServeSettings(**args)
    return S2DServer.options(
        autoscaling_config={"min_replicas": s.min_replicas, "max_replicas": s.max_replicas,
                            "target_ongoing_requests": s.target_ongoing_requests},
        max_ongoing_requests=s.max_ongoing_requests,
        max_queued_requests=s.max_queued_requests,
        ray_actor_options={"num_cpus": s.num_cpus, "num_gpus": s.num_gpus, **thread_options(s.cpu_threads)},
    ).bind(s.model_dump())


def load_settings(model_dir: str, api_key: str | None, config_path: str | None) -> ServeSettings:
    """Settings from an optional YAML file (its `args` section, as in serve/config.yaml), then flags."""
    import yaml
    from pydantic import ValidationError

    args: dict[str, Any] = {}
    if config_path:
        try:
            loaded = yaml.safe_load(Path(config_path).read_text()) or {}
        except (OSError, yaml.YAMLError) as e:
            raise S2DError(f"serve config {config_path}: {e}") from None
        apps = loaded.get("applications") if isinstance(loaded, dict) else None
        args = dict((apps[0].get("args") if apps else loaded) or {})
    args["model_dir"] = model_dir
    if api_key:
        args["api_key"] = api_key
    try:
        return ServeSettings(**args)
    except ValidationError as e:
        raise S2DError(f"serve config: {first_error(e)}") from None


def serve_forever(model_dir: str, host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None,
                  config_path: str | None = None) -> None:
    """`s2d serve`: start Ray Serve on host:port and block until Ctrl-C."""
    from s2d_ray.runtime import init_ray

    settings = load_settings(model_dir, api_key, config_path)
    init_ray([("model_dir", settings.model_dir)] if is_path(settings.model_dir) else [])
    for name, path in settings.adapters.items():
        require_shared(f"adapters.{name}", path)
    serve.start(http_options={"host": host, "port": port})
    serve.run(build_app(settings.model_dump()), name="s2d", route_prefix="/")
    auth = "API key required" if (settings.api_key or os.environ.get("S2D_API_KEY")) else "no API key (open)"
    print(f"serving {settings.served_name!r} at http://{host}:{port}/v1 ({auth}); Ctrl-C to stop", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        serve.shutdown()
