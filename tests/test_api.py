"""The HTTP API's handlers through FastAPI's test client, over a fake engine (no Ray, no vLLM
engine): auth, errors, parameters, logprobs/echo, streaming, System 2 and adaptive paths."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from fakes import FakeEngine
from s2d_ray.serving.api import OpenAIServer, build_api
from s2d_ray.serving.settings import ServeSettings

KEY = "k-123"
AUTH = {"Authorization": f"Bearer {KEY}"}
CHAT = {"model": "tiny", "messages": [{"role": "user", "content": "What is the capital of France?"}], "max_tokens": 8}


def _client(engine: FakeEngine | None = None, **settings) -> tuple[TestClient, FakeEngine]:
    engine = engine or FakeEngine()
    s = ServeSettings(model_dir="runs/x/model", model_name="tiny", api_key=KEY, system2_samples=3, **settings)
    return TestClient(build_api(OpenAIServer(s, engine, seeded_engine=True))), engine


@pytest.fixture
def client() -> TestClient:
    return _client()[0]


def _error(r, status: int) -> dict:
    assert r.status_code == status, r.text
    return r.json()["error"]


def test_health_and_auth(client):
    assert client.get("/health").json() == {"status": "ok"}
    assert _error(client.get("/v1/models"), 401)["code"] == "invalid_api_key"
    assert _error(client.get("/v1/models", headers={"Authorization": "Bearer nope"}), 401)["type"] == "authentication_error"
    assert _error(client.post("/v1/chat/completions", json=CHAT), 401)["code"] == "invalid_api_key"
    assert [m["id"] for m in client.get("/v1/models", headers=AUTH).json()["data"]] == ["tiny"]


def test_open_server_needs_no_key(monkeypatch):
    monkeypatch.delenv("S2D_API_KEY", raising=False)
    engine = FakeEngine()
    server = OpenAIServer(ServeSettings(model_dir="m", model_name="tiny"), engine, seeded_engine=True)
    assert TestClient(build_api(server)).post("/v1/chat/completions", json=CHAT).status_code == 200


@pytest.mark.parametrize(("body", "param", "code"), [
    ({**CHAT, "logit_bias": {"1": 5}}, "logit_bias", "unsupported_parameter"),
    ({**CHAT, "tools": []}, "tools", "unsupported_parameter"),
    ({**CHAT, "temperature": 7}, "temperature", None),
    ({**CHAT, "model": "nope"}, "model", "model_not_found"),
    ({**CHAT, "messages": []}, "messages", None),
    ({**CHAT, "max_tokens": 1000}, "messages", "context_length_exceeded"),
    ({**CHAT, "seed": 3, "temperature": 0.8}, "seed", "unsupported_parameter"),
    ({**CHAT, "logprobs": True, "s2d_mode": "system2"}, "logprobs", "unsupported_parameter"),
])
def test_bad_requests_are_400_naming_the_parameter(client, body, param, code):
    err = _error(client.post("/v1/chat/completions", json=body, headers=AUTH), 400)
    assert err["type"] == "invalid_request_error" and err["param"].startswith(param) and err["code"] == code


def test_malformed_bodies_are_400(client):
    assert "invalid JSON body" in _error(client.post("/v1/chat/completions", content=b"{nope", headers=AUTH), 400)["message"]
    assert "JSON object" in _error(client.post("/v1/chat/completions", json=[1, 2], headers=AUTH), 400)["message"]
    huge = client.post("/v1/chat/completions", content=b" " * (5 * 1024 * 1024), headers=AUTH)
    assert "body over" in _error(huge, 400)["message"]
    assert _error(client.post("/v1/chat/completions", content=b"\xff\xfe{", headers=AUTH), 400)["type"] == "invalid_request_error"
    assert _error(client.get("/v1/nothing", headers=AUTH), 404)["message"] == "Not Found"


def test_greedy_seed_is_accepted_and_changes_nothing(client):
    r = client.post("/v1/chat/completions", json={**CHAT, "seed": 3, "temperature": 0}, headers=AUTH)
    assert r.status_code == 200, r.text


def test_chat_system1_with_logprobs(client):
    r = client.post("/v1/chat/completions", json={**CHAT, "logprobs": True, "top_logprobs": 2, "n": 2}, headers=AUTH)
    body = r.json()
    assert r.status_code == 200
    confidence = pytest.approx(0.9048, abs=1e-4)  # exp(-0.1): every chosen token at -0.1
    assert body["s2d"] == {"path": "system1", "answer": "Paris is the answer", "confidence": confidence,
                           "answers": ["Paris is the answer"] * 2, "confidences": [confidence] * 2}
    assert [c["message"]["content"] for c in body["choices"]] == ["Paris is the answer"] * 2
    assert body["usage"]["completion_tokens"] == 8 and body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + 8
    content = body["choices"][0]["logprobs"]["content"]
    assert [t["token"] for t in content] == ["Paris", "is", "the", "answer"]
    assert content[0]["logprob"] == pytest.approx(-0.1) and content[0]["bytes"] == list(b"Paris")
    assert [a["token"] for a in content[0]["top_logprobs"]] == ["Paris", "ALT"]
    plain = client.post("/v1/chat/completions", json=CHAT, headers=AUTH).json()
    assert plain["choices"][0]["logprobs"] is None


def _events(r) -> list:
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    lines = [ln.removeprefix("data: ") for ln in r.text.splitlines() if ln.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    return [json.loads(ln) for ln in lines[:-1]]


def test_streaming_chat_matches_non_streaming(client):
    full = client.post("/v1/chat/completions", json=CHAT, headers=AUTH).json()["choices"][0]["message"]["content"]
    chunks = _events(client.post("/v1/chat/completions", json={**CHAT, "stream": True}, headers=AUTH))
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"]) == full
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop" and "usage" not in chunks[-1]
    with_usage = _events(client.post("/v1/chat/completions", json={**CHAT, "stream": True, "stream_options": {"include_usage": True}},
                                      headers=AUTH))
    assert with_usage[-1]["choices"] == [] and with_usage[-1]["usage"]["completion_tokens"] == 4


def test_completions_echo_logprobs_as_lm_eval_harness_reads_them(client):
    """lm-evaluation-harness `local-completions` loglikelihood: prompt = context + continuation,
    max_tokens 1, logprobs 1, echo; it sums token_logprobs[ctxlen:-1] and checks greediness."""
    context, continuation = "The capital of France is", "Paris"
    r = client.post("/v1/completions", headers=AUTH, json={
        "model": "tiny", "prompt": f"{context} {continuation}", "max_tokens": 1, "temperature": 0, "logprobs": 1,
        "echo": True, "seed": 1234})
    assert r.status_code == 200, r.text
    (choice,) = r.json()["choices"]
    lp = choice["logprobs"]
    assert choice["text"].startswith(f"{context} {continuation}")
    assert lp["tokens"][:6] == ["The", "capital", "of", "France", "is", "Paris"] and len(lp["tokens"]) == 7
    assert lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None
    ctxlen = 5
    assert sum(lp["token_logprobs"][ctxlen:-1]) == pytest.approx(-0.1)
    assert all(tok == max(top.values()) for tok, top in zip(lp["token_logprobs"][ctxlen:-1], lp["top_logprobs"][ctxlen:-1]))
    assert lp["text_offset"][:2] == [0, 3]
    no_echo = client.post("/v1/completions", headers=AUTH, json={"model": "tiny", "prompt": context, "max_tokens": 2, "logprobs": 0})
    lp = no_echo.json()["choices"][0]["logprobs"]
    assert lp["tokens"] == ["Paris", "is"] and all(len(t) == 1 for t in lp["top_logprobs"])


def test_completions_batch_of_prompts_and_token_ids(client):
    r = client.post("/v1/completions", headers=AUTH, json={"model": "tiny", "prompt": ["a b", "c d e"], "max_tokens": 2, "n": 2})
    body = r.json()
    assert [c["index"] for c in body["choices"]] == [0, 1, 2, 3] and body["usage"]["prompt_tokens"] == 5
    ids = client.post("/v1/completions", headers=AUTH, json={"model": "tiny", "prompt": [[1, 2, 3]], "max_tokens": 2})
    assert ids.status_code == 200 and ids.json()["usage"]["prompt_tokens"] == 3
    err = _error(client.post("/v1/completions", headers=AUTH, json={"model": "tiny", "prompt": ["a", "b"], "stream": True}), 400)
    assert err["param"] == "stream"
    assert _error(client.post("/v1/completions", headers=AUTH, json={"model": "tiny", "prompt": "a", "suffix": "z"}), 400)["param"] == "suffix"


def test_system2_mode_runs_the_program_through_the_driver():
    answers = iter(["Paris", "Paris", "Lyon"])

    def reply(prompt, params):
        return "What is the capital of France?" if prompt.startswith("The text below") else f"Answer: {next(answers)}"

    client, engine = _client(FakeEngine(reply))
    body = client.post("/v1/chat/completions", json={**CHAT, "s2d_mode": "system2"}, headers=AUTH).json()
    assert body["choices"][0]["message"]["content"] == "Paris"
    two_thirds = pytest.approx(2 / 3, abs=1e-4)
    assert body["s2d"] == {"path": "system2", "answer": "Paris", "confidence": two_thirds, "method": "s2a", "samples": 3,
                           "agreement": two_thirds}
    # s2a: one rewrite call with n=3, then one answer call per rewrite
    assert [c.n for c in engine.calls] == [3, 1, 1, 1]


@pytest.mark.parametrize(("logprob", "path"), [(-0.01, "system1"), (-2.0, "system2")])
def test_auto_mode_answers_directly_only_when_confident(logprob, path):
    client, engine = _client(FakeEngine(lambda p, params: "Answer: Paris", logprob=logprob), adaptive_threshold=0.5)
    body = client.post("/v1/chat/completions", json={**CHAT, "s2d_mode": "auto", "temperature": 1.0}, headers=AUTH).json()
    assert body["s2d"]["path"] == path
    assert engine.params[0].temperature == 0.0  # the confidence is the greedy answer's
    assert bool(engine.calls) == (path == "system2")


def test_dead_engine_is_503():
    client, engine = _client()
    engine.dead = True
    assert client.get("/health").status_code == 503
    err = _error(client.post("/v1/chat/completions", json=CHAT, headers=AUTH), 503)
    assert err["type"] == "server_error" and "engine died" in err["message"]


# -- the served model as a pipeline component ---------------------------------------------------------
TICKETS = {"name": "tickets", "answer": "label", "labels": {"billing": ["invoice"], "bug": [], "other": []},
           "system_prompt": "You route support tickets."}


def _recipe(method: str = "s2a", task: dict | None = TICKETS, max_tokens: int = 12):
    from s2d_ray.recipe import PromptRecipe, describe
    from s2d_ray.programs import system1_program
    from s2d_ray.tasks import TaskSpec

    spec = TaskSpec(**task) if task else None
    return PromptRecipe(method=method, task=spec, max_tokens=max_tokens, **describe(system1_program(method, spec)))


def _task_client(reply=lambda prompt, params: "Answer: invoice", recipe=None, **settings):
    engine = FakeEngine(reply)
    s = ServeSettings(model_dir="runs/x/model", model_name="tiny", api_key=KEY, system2_samples=3, **settings)
    recipe = recipe or _recipe()
    return TestClient(build_api(OpenAIServer(s, engine, seeded_engine=True, recipes={None: recipe}))), engine


RAW = {"model": "tiny", "messages": [{"role": "user", "content": "My invoice is wrong"}]}


def test_a_raw_input_is_asked_in_the_trained_prompt_and_its_answer_parsed():
    """The client sends the raw input; the server asks it as training and evaluation did (the
    task's system prompt, the input, its format line) within eval's token budget, and returns
    the task's parsed answer: here an alias, read as its label."""
    from s2d_ray.programs import system1_program
    from s2d_ray.tasks import TaskSpec

    client, engine = _task_client()
    body = client.post("/v1/chat/completions", json=RAW, headers=AUTH).json()
    program = system1_program("s2a", TaskSpec(**TICKETS))
    trained = program.call(program.system1_input({"input": "My invoice is wrong", "meta": {}})).messages
    assert engine.prompts[-1] == engine.tokenizer.decode(engine.chat_ids(trained))
    assert "Answer with just one of: billing, bug, other." in engine.prompts[-1] and "<system> You route" in engine.prompts[-1]
    assert engine.params[-1].max_tokens == 12  # the recipe's (eval.max_tokens), not the context's room
    assert body["choices"][0]["message"]["content"] == "Answer: invoice"
    assert body["s2d"]["answer"] == "billing" and body["s2d"]["path"] == "system1"
    raw = client.post("/v1/chat/completions", json={**RAW, "s2d_prompt": "raw"}, headers=AUTH).json()
    assert engine.prompts[-1] == "<user> My invoice is wrong <assistant>" and raw["s2d"]["answer"] == "billing"


@pytest.mark.parametrize(("body", "param", "says"), [
    ({**RAW, "messages": [{"role": "system", "content": "x"}, *RAW["messages"]]}, "messages", "one user message"),
    ({**RAW, "s2d_prompt": "raw", "s2d_fields": {"a": "b"}}, "s2d_fields", "task prompt only"),
    ({**RAW, "s2d_constrain": True, "response_format": {"type": "json_object"}}, "s2d_constrain", "one output constraint"),
    ({**RAW, "s2d_mode": "system2", "stop": ["x"]}, "stop", "System 1 answers only"),
    ({**RAW, "s2d_mode": "auto", "n": 2}, "n", "one vote"),
    ({**RAW, "s2d_mode": "system2", "response_format": {"type": "json_object"}}, "response_format", "System 1 answers only"),
])
def test_task_prompt_requests_that_cannot_be_honoured_are_400(body, param, says):
    client, _ = _task_client()
    err = _error(client.post("/v1/chat/completions", json=body, headers=AUTH), 400)
    assert err["param"] == param and says in err["message"], err


def test_a_model_without_recipe_takes_messages_as_given_and_refuses_the_task_prompt(client):
    err = _error(client.post("/v1/chat/completions", json={**CHAT, "s2d_prompt": "task"}, headers=AUTH), 400)
    assert err["param"] == "s2d_prompt" and "s2d_prompt.json" in err["message"]


def test_constrain_restricts_system1_to_the_task_labels():
    client, engine = _task_client()
    client.post("/v1/chat/completions", json={**RAW, "s2d_constrain": True}, headers=AUTH)
    assert engine.params[-1].structured_outputs.choice == ["billing", "bug", "other"]
    free, _ = _task_client(recipe=_recipe(task={"name": "free", "answer": "number"}))
    err = _error(free.post("/v1/chat/completions", json={**RAW, "s2d_constrain": True}, headers=AUTH), 400)
    assert err["param"] == "s2d_constrain" and "not a closed set (kind 'number')" in err["message"]


def test_response_format_reaches_the_engine_as_structured_outputs(client):
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    fmt = {"type": "json_schema", "json_schema": {"name": "city", "schema": schema, "strict": True}}
    engine = FakeEngine()
    c, _ = _client(engine)
    assert c.post("/v1/chat/completions", json={**CHAT, "response_format": fmt}, headers=AUTH).status_code == 200
    assert engine.params[-1].structured_outputs.json == schema
    c.post("/v1/completions", json={"model": "tiny", "prompt": "x", "structured_outputs": {"regex": "[0-9]+"}}, headers=AUTH)
    assert engine.params[-1].structured_outputs.regex == "[0-9]+"


def test_system2_reads_the_input_fields_and_the_requests_sampling():
    """BSM on a served model: its responses come as s2d_fields (without them a 400 naming
    them, not a 500); the request's temperature, top_p and max_tokens drive every step."""
    pair = {"response_a": "Paris.", "response_b": "Lyon."}
    task = {"name": "pairwise", "answer": "choice"}
    client, engine = _task_client(lambda prompt, params: "Answer: A", recipe=_recipe("bsm", task))
    err = _error(client.post("/v1/chat/completions", json={**RAW, "s2d_mode": "system2"}, headers=AUTH), 400)
    assert err["param"] == "s2d_fields" and "response_a" in err["message"]
    body = client.post("/v1/chat/completions", headers=AUTH, json={
        **RAW, "s2d_mode": "system2", "s2d_fields": pair, "temperature": 0.3, "top_p": 0.5, "max_tokens": 20}).json()
    assert body["s2d"]["method"] == "bsm" and body["s2d"]["answer"] == "A"
    assert {(d.temperature, d.top_p, d.max_tokens) for d in engine.defaults} == {(0.3, 0.5, 20)}
    assert any("Paris." in c.messages[-1]["content"] for c in engine.calls)
    s1 = client.post("/v1/chat/completions", json={**RAW, "s2d_fields": pair}, headers=AUTH)
    assert "Paris." in engine.prompts[-1] and s1.json()["s2d"]["answer"] == "A"  # BSM's judging prompt, both responses


def test_an_unexpected_error_is_an_openai_500_body():
    class Broken(FakeEngine):
        async def generate(self, ids, params, adapter=None):
            raise RuntimeError("boom")

    s = ServeSettings(model_dir="m", model_name="tiny", api_key=KEY)
    c = TestClient(build_api(OpenAIServer(s, Broken(), seeded_engine=True)), raise_server_exceptions=False)
    r = c.post("/v1/chat/completions", json=CHAT, headers=AUTH)
    assert r.status_code == 500 and r.json()["error"]["type"] == "server_error" and "boom" in r.json()["error"]["message"]


def test_a_batch_of_completion_prompts_runs_concurrently():
    import asyncio

    class Counting(FakeEngine):
        in_flight = peak = 0

        async def generate(self, ids, params, adapter=None):
            Counting.in_flight += 1
            Counting.peak = max(Counting.peak, Counting.in_flight)
            await asyncio.sleep(0.01)
            Counting.in_flight -= 1
            return self._output(ids, params)

    c, _ = _client(Counting())
    r = c.post("/v1/completions", headers=AUTH, json={"model": "tiny", "prompt": ["a", "b c", "d", "e"], "max_tokens": 2})
    assert r.status_code == 200 and [ch["text"] for ch in r.json()["choices"]] == ["Paris is"] * 4
    assert Counting.peak == 4


def test_streamed_answers_carry_s2d_on_the_last_finish_chunk():
    client, _ = _task_client()
    chunks = _events(client.post("/v1/chat/completions", json={**RAW, "stream": True}, headers=AUTH))
    assert all(c["choices"] for c in chunks)  # no empty chunk a plain client would trip on
    assert chunks[-1]["choices"][0]["finish_reason"] and chunks[-1]["s2d"]["answer"] == "billing"
    s2 = _events(client.post("/v1/chat/completions", json={**RAW, "stream": True, "s2d_mode": "system2"}, headers=AUTH))
    assert s2[-1]["s2d"]["path"] == "system2" and all(c["choices"] for c in s2)
