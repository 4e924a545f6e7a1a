"""Training examples: the model's own chat template, exactly as at inference; loss on the
target tokens only (the prompt is masked with -100)."""

from __future__ import annotations

from typing import Any

import numpy as np

IGNORE = -100


def encode_example(tokenizer: Any, prompt: str, target: str, max_length: int,
                   system_prompt: str | None = None) -> dict[str, list[int]]:
    """Token ids and labels for one (input -> target) pair.

    The prompt is rendered with ``add_generation_prompt=True`` after the task's system prompt,
    if any (what vLLM sends at inference); the labels cover the target and the end-of-turn
    token(s) the template adds after it.
    """
    system = [{"role": "system", "content": system_prompt}] if system_prompt else []
    messages = [*system, {"role": "user", "content": prompt}]
    prompt_text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    full_text = tokenizer.apply_chat_template(
        [*messages, {"role": "assistant", "content": target}], tokenize=False
    )
    if not full_text.startswith(prompt_text):  # templates that rewrite earlier turns
        full_text = prompt_text + target + (tokenizer.eos_token or "")
    prompt_ids = tokenizer.encode(prompt_text, add_special_tokens=False)
    answer_ids = tokenizer.encode(full_text[len(prompt_text):].rstrip("\n"), add_special_tokens=False)
    ids = (prompt_ids + answer_ids)[:max_length]
    labels = ([IGNORE] * len(prompt_ids) + answer_ids)[:max_length]
    return {"input_ids": ids, "labels": labels}


def tokenize(tokenizer: Any, batch: dict[str, np.ndarray], max_length: int,
             system_prompt: str | None = None) -> dict[str, list[np.ndarray]]:
    """input_ids/labels of a batch of distillation rows (``input``, ``target``)."""
    encoded = [encode_example(tokenizer, str(p), str(t), max_length, system_prompt)
               for p, t in zip(batch["input"], batch["target"])]
    return {"input_ids": [np.asarray(e["input_ids"], dtype=np.int64) for e in encoded],
            "labels": [np.asarray(e["labels"], dtype=np.int64) for e in encoded]}


def collate(batch: dict[str, np.ndarray], pad_id: int) -> dict[str, Any]:
    """Right-pad a batch of variable-length examples into tensors."""
    import torch

    seqs, labels = list(batch["input_ids"]), list(batch["labels"])
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    lab = torch.full((len(seqs), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, (s, l) in enumerate(zip(seqs, labels)):
        ids[i, : len(s)] = torch.as_tensor(s)
        lab[i, : len(l)] = torch.as_tensor(l)
        mask[i, : len(s)] = 1
    return {"input_ids": ids, "labels": lab, "attention_mask": mask}
