"""OpenAI request models, error mapping and response shapes (s2d_ray.serving.protocol); no engine."""

import math

import pytest
from pydantic import ValidationError

from s2d_ray.serving.protocol import (
    APIError, ChatRequest, CompletionRequest, chat_logprobs, chat_response, completion_logprobs, completion_response,
    validation_error,
)

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
COMPLETION = {"model": "m", "prompt": "2+2="}


def error_of(model, body):
    with pytest.raises(ValidationError) as e:
        model.model_validate(body)
    return validation_error(e.value.errors())


@pytest.mark.parametrize("model,base,param", [
    (ChatRequest, CHAT, "logit_bias"), (ChatRequest, CHAT, "tools"),
    (CompletionRequest, COMPLETION, "best_of"), (CompletionRequest, COMPLETION, "suffix"),
])
def test_unknown_parameter_is_a_400_naming_it(model, base, param):
    err = error_of(model, {**base, param: 1})
    assert (err.status, err.param, err.code) == (400, param, "unsupported_parameter")
    assert err.body()["error"]["message"].startswith(f"{param}: ")


def test_invalid_json_and_non_object_bodies():
    err = validation_error([{"type": "json_invalid", "loc": ("body", 0), "msg": "JSON decode error", "ctx": {"error": "Expecting value"}}])
    assert err.status == 400 and err.message == "invalid JSON body: Expecting value"
    assert error_of(ChatRequest, [1, 2]).message == "request body must be a JSON object"


def test_out_of_range_temperature_names_it():
    err = error_of(ChatRequest, {**CHAT, "temperature": 2.5})
    assert err.status == 400 and err.param == "temperature" and err.message.startswith("temperature: ")
    assert err.code is None


def test_chat_token_limit_and_messages():
    assert ChatRequest(**CHAT, max_tokens=10, max_completion_tokens=20).token_limit == 20
    assert ChatRequest(**CHAT, max_tokens=10).token_limit == 10
    req = ChatRequest(model="m", messages=[
        {"role": "developer", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}], "name": "ann"},
    ])
    assert req.chat_messages() == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "ab"}]


@pytest.mark.parametrize(("message", "param", "says"), [
    ({"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "image_url", "image_url": {"url": "x"}}]},
     "messages.0.content", "part 1 has type 'image_url'"),
    ({"role": "user", "content": [{"type": "text", "text": "a", "cache": True}]}, "messages.0.content", "cache"),
    ({"role": "user", "content": "a", "tool_calls": []}, "messages.0.tool_calls", "not supported"),
    ({"role": "tool", "content": "a"}, "messages.0.role", "Input should be"),
])
def test_what_cannot_reach_the_model_is_refused_not_dropped(message, param, says):
    """A content part other than text, or a message field the server cannot pass on, is a 400
    naming it (it used to be silently reduced to the message's text)."""
    with pytest.raises(ValidationError) as e:
        ChatRequest(model="m", messages=[message])
    err = validation_error(e.value.errors())
    assert err.status == 400 and err.param.startswith(param) and says in err.message, err.body()


@pytest.mark.parametrize(("extra", "param", "says"), [
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nonsense"}}}},
     "response_format.json_schema.schema", "not a valid JSON schema"),
    ({"response_format": {"type": "json_schema"}}, "response_format", "needs json_schema"),
    ({"response_format": {"type": "json_object", "strict": True}}, "response_format.strict", "not supported"),
    ({"response_format": {"type": "yaml"}}, "response_format.type", "Input should be"),
    ({"structured_outputs": {"regex": "a", "choice": ["b"]}}, "structured_outputs", "exactly one of"),
    ({"structured_outputs": {"json": {"type": 3}}}, "structured_outputs.json", "not a valid JSON schema"),
])
def test_bad_output_constraints_are_400_naming_them(extra, param, says):
    with pytest.raises(ValidationError) as e:
        ChatRequest(**CHAT, **extra)
    err = validation_error(e.value.errors())
    assert err.param == param and says in err.message, err.body()


def test_output_constraints_become_vllm_structured_outputs():
    schema = {"type": "object", "properties": {"label": {"enum": ["a", "b"]}}, "required": ["label"]}
    as_openai = ChatRequest(**CHAT, response_format={"type": "json_schema", "json_schema": {
        "name": "out", "schema": schema, "strict": True}}).constraint()
    assert as_openai.json == schema
    assert ChatRequest(**CHAT, response_format={"type": "json_object"}).constraint().json_object is True
    assert ChatRequest(**CHAT, response_format={"type": "text"}).constraint() is None
    assert ChatRequest(**CHAT, structured_outputs={"regex": "[0-9]+"}).constraint().regex == "[0-9]+"
    assert ChatRequest(**CHAT).constraint(("yes", "no")).choice == ["yes", "no"]
    with pytest.raises(APIError, match="one output constraint per request") as e:
        ChatRequest(**CHAT, structured_outputs={"regex": "x"}).constraint(("yes", "no"))
    assert e.value.param == "s2d_constrain"
    params = ChatRequest(**CHAT, structured_outputs={"choice": ["x", "y"]}).sampling_params(
        8, seeded_engine=True, constraint=ChatRequest(**CHAT, structured_outputs={"choice": ["x", "y"]}).constraint())
    assert params.structured_outputs.choice == ["x", "y"]


@pytest.mark.parametrize("prompt,expected", [
    ("hi", ["hi"]), (["a", "b"], ["a", "b"]), ([1, 2, 3], [[1, 2, 3]]), ([[1, 2], [3]], [[1, 2], [3]]),
])
def test_completion_prompts(prompt, expected):
    assert CompletionRequest(model="m", prompt=prompt).prompts() == expected


def test_empty_prompt_list_is_a_400():
    with pytest.raises(APIError) as e:
        CompletionRequest(model="m", prompt=[]).prompts()
    assert (e.value.status, e.value.param) == (400, "prompt")


def test_seed_on_sampled_request_refused_by_seeded_engine():
    with pytest.raises(APIError) as e:
        ChatRequest(**CHAT, seed=1, temperature=0.7).sampling_params(8, seeded_engine=True)
    assert (e.value.status, e.value.param, e.value.code) == (400, "seed", "unsupported_parameter")


def test_sampling_params_to_vllm():
    """One test for the vLLM import (slow): seeds under greedy decoding, greedy override, logprobs."""
    p = ChatRequest(**CHAT, seed=1, temperature=0.0).sampling_params(8, seeded_engine=True)
    assert p.seed is None and p.temperature == 0.0 and p.max_tokens == 8
    g = ChatRequest(**CHAT, seed=1, temperature=0.9).sampling_params(8, seeded_engine=True, greedy=True,
                                                                     logprobs=3, prompt_logprobs=1)
    assert (g.temperature, g.seed, g.logprobs, g.prompt_logprobs) == (0.0, None, 3, 1)
    s = CompletionRequest(**COMPLETION, seed=5, temperature=0.5, stop=["\n"]).sampling_params(4, seeded_engine=False)
    assert (s.seed, s.temperature, s.stop) == (5, 0.5, ["\n"])


@pytest.mark.parametrize("extra", [{"stop": [""]}, {"n": 2, "temperature": 0.0}])
def test_vllm_refusal_becomes_a_400(extra):
    with pytest.raises(APIError) as e:
        CompletionRequest(**COMPLETION, **extra).sampling_params(4, seeded_engine=False)
    assert e.value.status == 400


def decode(i):
    return f"<{i}>"


POSITIONS = [None, {11: (-1.0, "b"), 5: (-0.5, "x"), 6: (-2.0, None)}, {12: (-math.inf, None), 7: (-0.1, "yy")}]


def test_completion_logprobs():
    lp = completion_logprobs([10, 11, 12], POSITIONS, decode, offset=3, top=1)
    assert lp["tokens"] == ["<10>", "b", "<12>"]  # decode() where vLLM gave no text
    assert lp["text_offset"] == [3, 7, 8]
    assert lp["token_logprobs"] == [None, -1.0, -9999.0]
    assert lp["top_logprobs"] == [None, {"x": -0.5, "b": -1.0}, {"yy": -0.1, "<12>": -9999.0}]
    assert completion_logprobs([10, 11, 12], POSITIONS, decode, top=3)["top_logprobs"][1] == {"x": -0.5, "b": -1.0, "<6>": -2.0}


def test_completion_logprobs_top_zero_keeps_chosen_only():
    lp = completion_logprobs([10, 11, 12], POSITIONS, decode, top=0)
    assert lp["top_logprobs"] == [None, {"b": -1.0}, {"<12>": -9999.0}]
    assert lp["text_offset"] == [0, 4, 5]


@pytest.mark.parametrize("third,greedy", [({3: (-1.2, "c"), 8: (-0.4, "z")}, False), ({3: (-0.3, "c"), 8: (-0.9, "z")}, True)])
def test_lm_eval_loglikelihood_reading(third, greedy):
    """lm-evaluation-harness echoes context+continuation with max_tokens=1 and reads
    ``token_logprobs[ctxlen:-1]``; greedy means each token equals ``max(top.values())``."""
    ids = [1, 2, 3, 4, 9]  # context 1 2, continuation 3 4, one generated token 9
    positions = [None, {2: (-0.7, "a"), 5: (-0.1, "q")}, third, {4: (-0.2, "d"), 6: (-1.5, "e")}, {9: (-0.05, "g")}]
    lp = completion_logprobs(ids, positions, decode, top=1)
    ctxlen = 2
    tokens_lp, tops = lp["token_logprobs"][ctxlen:-1], lp["top_logprobs"][ctxlen:-1]
    assert sum(tokens_lp) == pytest.approx(third[3][0] - 0.2)
    assert all(t == max(top.values()) for t, top in zip(tokens_lp, tops)) is greedy


def test_chat_logprobs():
    out = chat_logprobs([5], [{5: (-0.7, "é"), 6: (-0.2, "a"), 7: (-3.0, None)}], decode, top=3)
    (entry,) = out["content"]
    assert (entry["token"], entry["logprob"], entry["bytes"]) == ("é", -0.7, [0xC3, 0xA9])
    assert entry["top_logprobs"] == [
        {"token": "a", "logprob": -0.2, "bytes": [97]},
        {"token": "é", "logprob": -0.7, "bytes": [0xC3, 0xA9]},
        {"token": "<7>", "logprob": -3.0, "bytes": list(b"<7>")},
    ]
    assert len(chat_logprobs([5], [{5: (-0.7, "é"), 6: (-0.2, "a")}], decode, top=1)["content"][0]["top_logprobs"]) == 1


def test_chat_response():
    body = chat_response("chatcmpl-1", "m", [("4", "stop"), ("5", "length")], 7, 3)
    assert (body["id"], body["object"], body["model"]) == ("chatcmpl-1", "chat.completion", "m")
    assert body["usage"] == {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
    assert [c["message"] for c in body["choices"]] == [{"role": "assistant", "content": "4"}, {"role": "assistant", "content": "5"}]
    assert [(c["index"], c["finish_reason"], c["logprobs"]) for c in body["choices"]] == [(0, "stop", None), (1, "length", None)]
    assert "s2d" not in body and isinstance(body["created"], int)
    full = chat_response("c", "m", [("4", "stop")], 1, 1, s2d={"mode": "system2"}, logprobs=[{"content": []}])
    assert full["s2d"] == {"mode": "system2"} and full["choices"][0]["logprobs"] == {"content": []}


def test_completion_response():
    body = completion_response("cmpl-1", "m", [{"text": "a", "finish_reason": "stop", "logprobs": {"tokens": ["a"]}},
                                               {"text": "b", "finish_reason": "length", "logprobs": None}], 2, 2)
    assert (body["id"], body["object"], body["usage"]["total_tokens"]) == ("cmpl-1", "text_completion", 4)
    assert body["choices"][0] == {"index": 0, "text": "a", "finish_reason": "stop", "logprobs": {"tokens": ["a"]}}
    assert body["choices"][1]["index"] == 1
