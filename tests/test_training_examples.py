"""Loss masking of distillation examples (s2d_ray.training.examples) with the real chat template."""

from __future__ import annotations

import pytest

from s2d_ray.training.examples import IGNORE, encode_example

pytestmark = pytest.mark.slow  # converts the bundled model on first use (~10 s)


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from s2d_ray.models import resolve_model

    return AutoTokenizer.from_pretrained(resolve_model("smollm2-135m-instruct"))


@pytest.mark.parametrize("system", [None, "You route support tickets."])
def test_labels_cover_only_the_target_and_the_end_of_turn(tokenizer, system):
    enc = encode_example(tokenizer, "Where is my parcel?", "Shipping", 256, system_prompt=system)
    ids, labels = enc["input_ids"], enc["labels"]
    assert len(ids) == len(labels)
    first = next(i for i, label in enumerate(labels) if label != IGNORE)
    assert all(label == IGNORE for label in labels[:first]) and labels[first:] == ids[first:]
    # The masked prefix is exactly what vLLM renders at inference (system prompt included).
    messages = [*([{"role": "system", "content": system}] if system else []), {"role": "user", "content": "Where is my parcel?"}]
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert tokenizer.decode(ids[:first]) == prompt
    assert tokenizer.decode(labels[first:]).strip() == "Shipping<|im_end|>"
    assert tokenizer.decode(ids[:first]).count("<|im_start|>system") == 1  # the given one, or the template's default


def test_truncation_keeps_ids_and_labels_aligned(tokenizer):
    enc = encode_example(tokenizer, "word " * 100, "Billing", 32)
    assert len(enc["input_ids"]) == len(enc["labels"]) == 32
    assert all(label == IGNORE for label in enc["labels"])  # the target was cut off: nothing to learn
