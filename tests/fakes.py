"""Fake engines for fast tests: programs, filters, the row runner and the server run on them
exactly as on vLLM (the same driver and the same ``complete(call)`` interface)."""

from __future__ import annotations

import asyncio
from typing import Any, Callable

from s2d_ray.programs.base import Call, Completion
from s2d_ray.programs.driver import run_program


class Script:
    """An async fake engine: ``reply(prompt, i, call)`` gives the text of completion ``i``.

    ``rounds`` groups the calls that were in flight together (a program step's calls arrive
    together; a new round starts with the first call after one has returned)."""

    def __init__(self, reply: Callable[[str, int, Call], str], delay: Callable[[str], float] | None = None):
        self.reply, self.delay = reply, delay
        self.rounds: list[list[Call]] = []
        self.calls: list[Call] = []
        self._returned = True

    async def __call__(self, call: Call, defaults: Any = None, adapter: str | None = None) -> list[Completion]:
        assert call.messages and call.messages[-1]["role"] == "user"
        if self._returned:
            self.rounds.append([])
            self._returned = False
        self.rounds[-1].append(call)
        self.calls.append(call)
        prompt = call.messages[-1]["content"]
        await asyncio.sleep(self.delay(prompt) if self.delay else 0)
        self._returned = True
        return [Completion(t, tokens=len(t.split())) for t in (self.reply(prompt, i, call) for i in range(call.n))]

    def prompts(self, round_no: int) -> list[str]:
        return [c.messages[-1]["content"] for c in self.rounds[round_no]]


def batch_engine(generate: Callable[[list[Call]], list[list[Completion]]]):
    """An async ``complete`` from a synchronous ``generate(calls)`` (one call at a time)."""

    async def complete(call: Call, defaults: Any = None, adapter: str | None = None) -> list[Completion]:
        return generate([call])[0]

    return complete


def drive(runs: list, complete) -> list[Any]:
    """Run program/filter generators concurrently on ``complete`` (a Script or a sync
    ``generate(calls)``); a run that raises gives its exception as its result."""
    if not isinstance(complete, Script) and not asyncio.iscoroutinefunction(complete):
        complete = batch_engine(complete)

    async def main():
        return await asyncio.gather(*(run_program(r, complete) for r in runs), return_exceptions=True)

    return list(asyncio.run(main()))


class FakeTokenizer:
    """Whitespace 'tokens': each distinct word gets an id."""

    def __init__(self) -> None:
        self.vocab: dict[str, int] = {}
        self.words: dict[int, str] = {}

    def encode(self, text: str) -> list[int]:
        ids = []
        for w in text.split():
            if w not in self.vocab:
                self.vocab[w] = len(self.vocab) + 1
                self.words[self.vocab[w]] = w
            ids.append(self.vocab[w])
        return ids

    def decode(self, ids: list[int]) -> str:
        return " ".join(self.words.get(i, "?") for i in ids)


class FakeEngine:
    """The serving engine's interface without vLLM: ``reply(prompt_text, params)`` gives the
    text of every choice; logprobs are -0.1 per chosen token (``logprob`` overrides), with one
    alternative token at -3.0. ``calls`` records program calls (System 2)."""

    max_model_len = 256

    def __init__(self, reply: Callable[[str, Any], str] = lambda prompt, params: "Paris is the answer",
                 logprob: float = -0.1) -> None:
        self.tokenizer = FakeTokenizer()
        self.reply, self.logprob = reply, logprob
        self.dead = False
        self.calls: list[Call] = []
        self.defaults: list[Any] = []  # the Sampling defaults of each program call
        self.params: list[Any] = []
        self.prompts: list[str] = []  # the decoded prompt of each request

    def chat_ids(self, messages: list[dict[str, str]]) -> list[int]:
        return self.tokenizer.encode(" ".join(f"<{m['role']}> {m['content']}" for m in messages) + " <assistant>")

    def text_ids(self, prompt: str) -> list[int]:
        return self.tokenizer.encode(prompt)

    def _position(self, tid: int) -> dict[int, Any]:
        from vllm.logprobs import Logprob

        alt = self.tokenizer.encode("ALT")[0]
        return {tid: Logprob(self.logprob, 1, self.tokenizer.decode([tid])), alt: Logprob(-3.0, 2, "ALT")}

    def _output(self, ids: list[int], params: Any) -> Any:
        from types import SimpleNamespace

        if self.dead:
            from s2d_ray.errors import EngineDead

            raise EngineDead("vLLM engine died")
        self.params.append(params)
        self.prompts.append(self.tokenizer.decode(ids))
        outs = []
        for i in range(params.n):
            words = self.reply(self.tokenizer.decode(ids), params).split()[: params.max_tokens]
            tids = self.tokenizer.encode(" ".join(words))
            lps = [self._position(t) for t in tids] if params.logprobs is not None else None
            outs.append(SimpleNamespace(index=i, text=" ".join(words), token_ids=tids, logprobs=lps,
                                        finish_reason="length" if len(words) == params.max_tokens else "stop"))
        prompt_lps = [None] + [self._position(t) for t in ids[1:]] if params.prompt_logprobs is not None else None
        return SimpleNamespace(outputs=outs, prompt_token_ids=ids, prompt_logprobs=prompt_lps)

    async def generate(self, ids: list[int], params: Any, adapter: str | None = None) -> Any:
        await asyncio.sleep(0)
        return self._output(ids, params)

    async def requests(self, ids: list[int], params: Any, adapter: str | None = None):
        """Streams word by word (delta outputs), as vLLM's DELTA output kind."""
        from types import SimpleNamespace

        final = self._output(ids, params)
        for o in final.outputs:
            words = o.text.split()
            for k, (w, t) in enumerate(zip(words, o.token_ids)):
                last = k == len(words) - 1
                yield SimpleNamespace(outputs=[SimpleNamespace(index=o.index, text=(" " if k else "") + w, token_ids=[t],
                                                               logprobs=[o.logprobs[k]] if o.logprobs else None,
                                                               finish_reason=o.finish_reason if last else None)])

    async def complete(self, call: Call, defaults: Any, adapter: str | None = None) -> list[Completion]:
        self.calls.append(call)
        self.defaults.append(defaults)
        await asyncio.sleep(0)
        text = self.reply(call.messages[-1]["content"], defaults)
        return [Completion(text, len(text.split()))] * call.n
