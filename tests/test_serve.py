"""The real server (`s2d serve`: Ray Serve + vLLM async engine) through the official openai client.

On SmolLM2-135M; `S2D_SERVE_TEST_MODEL=runs/demo/model pytest tests/test_serve.py -k "schema or parse
or label or fuzz or bad_requests"` runs the structured-output and malformed-request checks against
another model (e.g. the demo's distilled one, served with its prompt recipe)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

import served

pytestmark = pytest.mark.slow

KEY = "test-key-123"
PORT = 8391
BASE = f"http://127.0.0.1:{PORT}"
# The deployment's task (no recipe: SmolLM2 as shipped): answers are parsed and constrained to these.
COLOURS = {"name": "colours", "answer": "label", "labels": ["red", "green", "blue", "yellow"]}
MODEL = os.environ.get("S2D_SERVE_TEST_MODEL", "smollm2-135m-instruct")


@pytest.fixture(scope="module")
def adapter_dir(tmp_path_factory) -> Path:
    """A real (untrained) LoRA adapter for the small model, to exercise adapter selection."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from s2d_ray.models import resolve_model

    out = tmp_path_factory.mktemp("adapter")
    model = AutoModelForCausalLM.from_pretrained(resolve_model(MODEL))
    get_peft_model(model, LoraConfig(r=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def server(adapter_dir, tmp_path_factory):
    cfg = tmp_path_factory.mktemp("serve") / "serve.yaml"
    cfg.write_text(json.dumps({"applications": [{"args": {
        "model_name": "tiny", "adapters": {"tiny-lora": str(adapter_dir)}, "mode": "system1",
        "adaptive_threshold": 0.5, "system2_samples": 2, "system2_max_tokens": 32, "task": COLOURS,
        "engine": {"max_model_len": 512, "cpu_kv_cache_gib": 1}, "max_ongoing_requests": 8, "cpu_threads": 2}}]}))
    proc = served.start(MODEL, PORT, tmp_path_factory.mktemp("logs") / "serve.log",
                        "--api-key", KEY, "--config", str(cfg))
    yield proc
    served.stop(proc)
    subprocess.run(["ray", "stop", "--force"], capture_output=True, env={**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"})


@pytest.fixture
def client(server):
    from openai import OpenAI

    return OpenAI(base_url=f"{BASE}/v1", api_key=KEY, max_retries=0, timeout=120)


def test_models_lists_base_and_adapters(client):
    ids = {m.id for m in client.models.list().data}
    assert ids == {"tiny", "tiny-lora"}


def test_chat_completion_and_usage(client):
    r = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "What is the capital of France?"}],
                                       max_tokens=16, temperature=0)
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content.strip()
    assert r.usage.prompt_tokens > 5 and 0 < r.usage.completion_tokens <= 16
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_completion(client):
    r = client.completions.create(model="tiny", prompt="The capital of France is", max_tokens=8, temperature=0)
    assert r.object == "text_completion" and r.choices[0].text
    assert r.usage.completion_tokens <= 8


def test_streaming_matches_non_streaming(client):
    messages = [{"role": "user", "content": "Name three colours."}]
    full = client.chat.completions.create(model="tiny", messages=messages, max_tokens=20, temperature=0)
    chunks = list(client.chat.completions.create(model="tiny", messages=messages, max_tokens=20, temperature=0, stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == full.choices[0].message.content
    assert any(c.choices and c.choices[0].finish_reason for c in chunks)


def test_adapter_selected_by_model_field(client):
    r = client.chat.completions.create(model="tiny-lora", messages=[{"role": "user", "content": "Hi"}], max_tokens=8)
    assert r.model == "tiny-lora" and r.choices[0].message.content is not None


def test_missing_or_wrong_key_is_401(server):
    from openai import AuthenticationError, OpenAI

    for key in ("wrong", ""):
        bad = OpenAI(base_url=f"{BASE}/v1", api_key=key or "x", max_retries=0)
        with pytest.raises(AuthenticationError):
            bad.models.list()
    r = httpx.post(f"{BASE}/v1/chat/completions", json={"model": "tiny", "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "nope", "messages": [{"role": "user", "content": "x"}]}, "model"),
        ({"model": "tiny", "messages": [{"role": "user", "content": "x"}], "temperature": 7}, "temperature"),
        ({"model": "tiny", "messages": []}, "messages"),
        ({"model": "tiny", "messages": [{"role": "user", "content": "x"}], "max_tokens": -1}, "max_tokens"),
        ({"model": "tiny", "messages": [{"role": "user", "content": "word " * 2000}]}, "messages"),
        ({"model": "tiny", "messages": [{"role": "user", "content": "x"}], "max_tokens": 100000}, "messages"),
        ({"model": "tiny", "messages": [{"role": "user", "content": "x"}], "response_format": {
            "type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object", "required": "a"}}}},
         "response_format.json_schema.schema"),
        ({"model": "tiny", "messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]},
         "messages.0.content"),
        ({"model": "tiny", "messages": [{"role": "user", "content": "x"}], "s2d_prompt": "task"}, "s2d_prompt"),
        ({"model": "tiny", "messages": [{"role": "user", "content": "x"}], "structured_outputs": {"grammar": "root ::= ("}},
         "structured_outputs"),
        ({"model": "tiny", "messages": [{"role": "user", "content": "x"}], "s2d_mode": "system2", "s2d_fields": {"a": "b"}},
         "s2d_fields"),
    ],
)
def test_bad_requests_are_400_with_openai_error(server, body, param):
    if param in ("s2d_prompt", "s2d_fields") and (Path(MODEL) / "s2d_prompt.json").exists():
        pytest.skip(f"{param}: a bad request only for a model without a prompt recipe (this one has one)")
    r = httpx.post(f"{BASE}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {KEY}"}, timeout=60)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["message"] and err["type"] == "invalid_request_error"
    assert err["param"] is None or err["param"].startswith(param)


def test_invalid_json_is_400(server):
    r = httpx.post(f"{BASE}/v1/chat/completions", content=b"{not json", headers={"Authorization": f"Bearer {KEY}"})
    assert r.status_code == 400 and "invalid JSON" in r.json()["error"]["message"]


def test_adaptive_modes_report_their_path(client):
    messages = [{"role": "user", "content": "I think the answer is Lyon, but I'm really not sure. What is the capital of France?"}]
    s2 = client.chat.completions.create(model="tiny", messages=messages, max_tokens=16, extra_body={"s2d_mode": "system2"})
    assert s2.model_extra["s2d"]["path"] == "system2" and s2.model_extra["s2d"]["samples"] == 2
    auto = client.chat.completions.create(model="tiny", messages=messages, max_tokens=16, extra_body={"s2d_mode": "auto"})
    info = auto.model_extra["s2d"]
    assert 0.0 <= info["confidence"] <= 1.0
    assert info["path"] == ("system1" if info["confidence"] >= 0.5 else "system2")
    plain = client.chat.completions.create(model="tiny", messages=messages, max_tokens=16)
    assert plain.model_extra["s2d"]["path"] == "system1" and 0.0 <= plain.model_extra["s2d"]["confidence"] <= 1.0


def test_fuzzed_requests_never_5xx(server):
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 10**6), st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20))
    fields = st.fixed_dictionaries({}, optional={
        "model": st.one_of(st.just("tiny"), st.just("tiny-lora"), scalars),
        "messages": st.one_of(st.just([{"role": "user", "content": "Hi"}]), st.lists(st.dictionaries(st.sampled_from(["role", "content"]), scalars, max_size=2), max_size=2), scalars),
        "max_tokens": st.one_of(st.integers(-2, 4), scalars), "temperature": scalars, "n": st.one_of(st.integers(0, 3), scalars),
        "stream": st.booleans(), "stop": scalars, "s2d_mode": st.one_of(st.sampled_from(["system1", "auto", "bogus"]), scalars),
        "response_format": st.one_of(scalars, st.sampled_from([
            {"type": "json_object"}, {"type": "json_schema"}, {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": 5}}},
            {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}, "strict": True, "extra": 1}}])),
        "s2d_constrain": st.one_of(st.booleans(), scalars), "s2d_prompt": st.one_of(st.sampled_from(["task", "raw"]), scalars),
        "structured_outputs": st.one_of(scalars, st.sampled_from([{"regex": "[a-z]+"}, {"choice": []}, {"grammar": "root ::= x"}]))})
    bodies = st.one_of(fields.map(lambda d: json.dumps(d).encode()), st.binary(max_size=64))
    headers = st.sampled_from([{"Authorization": f"Bearer {KEY}"}, {"Authorization": "Bearer nope"}, {}])
    seen: dict[int, int] = {}

    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
    @given(bodies, headers)
    def probe(body, hdrs):
        r = httpx.post(f"{BASE}/v1/chat/completions", content=body, headers={"Content-Type": "application/json", **hdrs}, timeout=120)
        seen[r.status_code] = seen.get(r.status_code, 0) + 1
        assert r.status_code < 500, (body, r.status_code, r.text[:300])
        if r.status_code >= 400:
            assert "error" in r.json()

    probe()
    assert 401 in seen and 400 in seen


def test_huge_body_and_huge_prompt_are_400_not_5xx(server):
    auth = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    r = httpx.post(f"{BASE}/v1/chat/completions", content=b" " * (5 * 1024 * 1024), headers=auth, timeout=120)
    assert r.status_code == 400 and "body over" in r.json()["error"]["message"]
    long_prompt = {"model": "tiny", "messages": [{"role": "user", "content": "word " * 3000}], "max_tokens": 4}
    r = httpx.post(f"{BASE}/v1/chat/completions", json=long_prompt, headers=auth, timeout=120)
    assert r.status_code == 400, r.text[:300]


def test_bounded_load_has_zero_errors(server):
    """64 requests, 16 in flight (twice the deployment's max_ongoing_requests): all 200."""
    import asyncio

    async def run() -> dict[int, int]:
        counts: dict[int, int] = {}
        gate = asyncio.Semaphore(16)
        async with httpx.AsyncClient(base_url=BASE, headers={"Authorization": f"Bearer {KEY}"}, timeout=300) as http:
            async def one(i: int) -> None:
                body = {"model": "tiny" if i % 2 else "tiny-lora", "max_tokens": 8,
                        "messages": [{"role": "user", "content": f"Name a colour. ({i})"}]}
                async with gate:
                    r = await http.post("/v1/chat/completions", json=body)
                counts[r.status_code] = counts.get(r.status_code, 0) + 1
                if r.status_code == 200:
                    assert r.json()["choices"][0]["message"]["content"] is not None

            await asyncio.gather(*(one(i) for i in range(64)))
        return counts

    assert asyncio.run(run()) == {200: 64}


SCHEMA = {"type": "object", "additionalProperties": False, "required": ["answer", "confidence", "kind"], "properties": {
    "answer": {"type": "string", "maxLength": 40}, "confidence": {"type": "integer", "minimum": 0, "maximum": 100},
    "kind": {"enum": ["fact", "opinion", "unknown"]}}}
QUESTIONS = ["What is the capital of France?", "How many legs does a spider have?", "Is chocolate tasty?", "Name a prime number.",
             "Who wrote Hamlet?", "What colour is grass?", "What is 12 times 12?", "Which planet is largest?",
             "Is the moon made of cheese?", "What language is spoken in Brazil?", "Translate 'cat' to French.",
             "What is the boiling point of water in Celsius?", "Name a mammal that flies.", "What is the square root of 81?",
             "Who painted the Mona Lisa?", "Is Python a snake or a language?", "What year did World War II end?",
             "What is H2O?", "Recommend a good book.", "How many continents are there?"]


def _async_client():
    from openai import AsyncOpenAI

    return AsyncOpenAI(base_url=f"{BASE}/v1", api_key=KEY, max_retries=0, timeout=300)


def test_json_schema_output_validates_on_every_prompt(server):
    """response_format json_schema (OpenAI's shape, strict) through vLLM's structured outputs:
    every one of 20 varied prompts, sampled, returns JSON that validates against the schema."""
    import asyncio

    import jsonschema

    fmt = {"type": "json_schema", "json_schema": {"name": "answer", "schema": SCHEMA, "strict": True}}

    async def run():
        async with _async_client() as client:
            return await asyncio.gather(*(client.chat.completions.create(
                model="tiny", messages=[{"role": "user", "content": f"{q} Reply in JSON."}], max_tokens=160,
                temperature=0.7, response_format=fmt) for q in QUESTIONS))

    for q, r in zip(QUESTIONS, asyncio.run(run())):
        assert r.choices[0].finish_reason == "stop", (q, r.choices[0].message.content)
        jsonschema.validate(json.loads(r.choices[0].message.content), SCHEMA)


def test_openai_parse_with_a_pydantic_model(client):
    from typing import Literal

    from pydantic import BaseModel, Field

    class Capital(BaseModel):
        city: str = Field(max_length=30)
        country: str = Field(max_length=30)
        certainty: Literal["high", "low"]

    r = client.chat.completions.parse(model="tiny", messages=[{"role": "user", "content": "Capital of France, as JSON?"}],
                                      max_tokens=120, temperature=0, response_format=Capital)
    assert isinstance(r.choices[0].message.parsed, Capital), r.choices[0].message.content


def test_label_constraint_never_answers_outside_the_labels(server):
    """s2d_constrain on the deployment's label task: 50 sampled prompts, every answer one of its
    labels, and the s2d extension's parsed answer is that label."""
    import asyncio

    prompts = [f"{q} Pick a colour for this." for q in QUESTIONS] + [f"Which colour is {w}?" for w in (
        "a banana", "the sky", "a leaf", "blood", "snow", "coal", "an orange", "a lemon", "the sea", "a ruby", "grass",
        "a tomato", "a daffodil", "a sapphire", "an emerald", "a cherry", "sunshine", "a frog", "a fire truck", "ice",
        "a lime", "a strawberry", "the ocean", "corn", "a plum", "moss", "a canary", "brick", "denim", "a pea")]
    assert len(prompts) == 50

    async def run():
        async with _async_client() as client:
            return await asyncio.gather(*(client.chat.completions.create(
                model="tiny", messages=[{"role": "user", "content": p}], max_tokens=8, temperature=1.0,
                extra_body={"s2d_constrain": True}) for p in prompts))

    answers = [(r.choices[0].message.content, r.model_extra["s2d"]["answer"]) for r in asyncio.run(run())]
    assert all(text in COLOURS["labels"] and parsed == text for text, parsed in answers), answers
