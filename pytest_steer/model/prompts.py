"""Prompts as the model receives them: the chat template applied, and their lengths in tokens."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def render_prompt(tokenizer: Any, prompt: str) -> str:
    """The text the model sees: the chat template with a generation prompt, when there is one."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)
    return prompt


def template_prefix(tokenizer: Any) -> tuple[int, ...]:
    """The tokens every templated prompt starts with, whatever its text: the chat template's system prompt and the
    user turn's opening, as this tokenizer splits them; empty without a chat template."""
    if not getattr(tokenizer, "chat_template", None):
        return ()
    first, second = (tokenizer(render_prompt(tokenizer, text), add_special_tokens=False)["input_ids"] for text in ("A", "Z"))
    shared = 0
    while shared < min(len(first), len(second)) and first[shared] == second[shared]:
        shared += 1
    return tuple(first[:shared])


def prompt_lengths(tokenizer: Any, prompts: Sequence[str]) -> list[int]:
    """Each prompt's length in tokens as the model receives it (chat template applied)."""
    texts = [render_prompt(tokenizer, p) for p in prompts]
    return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
