"""Ray Serve placement of the OpenAI-compatible API (serving/api.py): one vLLM async engine per
replica, continuous batching across requests, autoscaling.

``build_app(args)`` is the import path for `serve run` / `serve deploy` / RayService;
``serve_forever`` is `s2d serve`.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from ray import serve

from s2d_ray import console
from s2d_ray.errors import S2DError, first_error
from s2d_ray.models import is_path
from s2d_ray.recipe import read_recipe
from s2d_ray.runtime import require_shared, engine_actor_options
from s2d_ray.serving.api import OpenAIServer, build_api
from s2d_ray.serving.settings import ServeSettings

__all__ = ["S2DServer", "ServeSettings", "build_app", "load_settings", "replica_server", "serve_forever"]


@serve.deployment(name="S2DServer")
@serve.ingress()
class S2DServer:
    """One replica: the engine (model and adapters resolved on this node) behind the API."""

    async def __init__(self, settings: dict[str, Any]) -> None:
        # async: Ray Serve runs it on the replica's user-code loop, where its requests run (the
        # engine's output handler binds to the loop of its first request).
        self.server = replica_server(ServeSettings(**settings))
        await self.server.warm_up()

    def __serve_build_asgi_app__(self) -> FastAPI:
        """Ray Serve builds the replica's app after the constructor, around its engine."""
        return build_api(self.server)


def replica_server(s: ServeSettings) -> OpenAIServer:
    """What a replica serves: its engine (model and adapters resolved on this node) and each
    model's prompt recipe, behind the API's logic (benchmarks/serving.py times it in-process)."""
    from vllm.config import StructuredOutputsConfig

    from s2d_ray.engine import Engine, on_cpu

    # Compact JSON for response_format (a small model otherwise spends its tokens on blank
    # lines, allowed by the grammar): vLLM reads disable_any_whitespace from the engine's
    # config only (a request's own flag is ignored), and only for xgrammar/guidance.
    engine = Engine(s.model_dir, s.engine, s.adapters,
                    structured_outputs_config=StructuredOutputsConfig(backend="xgrammar", disable_any_whitespace=True))
    recipes = {name: r for name, path in [(None, engine.path), *engine.adapter_paths.items()]
               if (r := read_recipe(path)) is not None}  # each model's trained prompt (s2d_ray.recipe)
    return OpenAIServer(s, engine, seeded_engine=on_cpu(), recipes=recipes)


def build_app(args: dict[str, Any]) -> serve.Application:
    """Ray Serve application builder (`serve run s2d_ray.serving.app:build_app model_dir=...`)."""
    s = ServeSettings(**args)
    return S2DServer.options(
        autoscaling_config={"min_replicas": s.min_replicas, "max_replicas": s.max_replicas,
                            "target_ongoing_requests": s.target_ongoing_requests},
        max_ongoing_requests=s.max_ongoing_requests,
        max_queued_requests=s.max_queued_requests,
        ray_actor_options={"num_cpus": s.num_cpus, "num_gpus": s.num_gpus, **engine_actor_options(s.cpu_threads)},
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
        raise S2DError(f"serve config: {first_error(e, ServeSettings)}") from None


def serve_forever(model_dir: str, host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None,
                  config_path: str | None = None) -> None:
    """`s2d serve`: start Ray Serve on host:port and block until Ctrl-C."""
    from s2d_ray.runtime import init_ray

    settings = load_settings(model_dir, api_key, config_path)
    console.say("s2d serve: starting Ray")
    init_ray([("model_dir", settings.model_dir)] if is_path(settings.model_dir) else [])
    for name, path in settings.adapters.items():
        require_shared(f"adapters.{name}", path)
    console.say(f"s2d serve: starting Ray Serve on {host}:{port}")
    serve.start(http_options={"host": host, "port": port})
    console.quiet_libraries()  # Ray Serve sets up its loggers when it starts
    console.say(f"s2d serve: starting {settings.served_name!r} (a vLLM engine per replica)")
    serve.run(build_app(settings.model_dump()), name="s2d", route_prefix="/")
    auth = "API key required" if (settings.api_key or os.environ.get("S2D_API_KEY")) else "no API key (open)"
    recipe = read_recipe(settings.model_dir) if os.path.isdir(settings.model_dir) else None
    prompt = (f"raw inputs asked in its trained prompt (s2d_prompt.json: task "
              f"{recipe.task.name if recipe.task else 'free-form'}, {recipe.method})" if recipe else "messages sent as given")
    console.say(f"serving {settings.served_name!r} at http://{host}:{port}/v1 ({auth}; {prompt}); Ctrl-C to stop")
    # SIGTERM (kill, systemd, Kubernetes) stops the server as Ctrl-C does. Ray's core worker
    # installs a failure handler for it that dumps every thread's stack and aborts; a Python
    # handler set after ray.init replaces it.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        serve.shutdown()
    console.say("stopped")


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt
