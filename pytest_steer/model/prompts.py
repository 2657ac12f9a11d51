"""Prompts as the model receives them: the chat template applied, and their lengths in tokens."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def render_prompt(tokenizer: Any, prompt: str) -> str:
    """The text the model sees: the chat template with a generation prompt, when there is one."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)
    return prompt


def prompt_lengths(tokenizer: Any, prompts: Sequence[str]) -> list[int]:
    """Each prompt's length in tokens as the model receives it (chat template applied)."""
    texts = [render_prompt(tokenizer, p) for p in prompts]
    return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
