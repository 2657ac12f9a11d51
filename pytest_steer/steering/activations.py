"""What activation methods measure on the model: a decoder layer's output at the last token of prompts."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from pytest_steer.model.prompts import render_prompt
from pytest_steer.steering.actadd.instruction_vectors import InstructionMeasure
from pytest_steer.steering.decoder import checked_layer
from pytest_steer.steering.pasta.attention import shared_kernels

ACTIVATION_BATCH = 16


def last_token_activations(model: nn.Module, tokenizer: Any, prompts: Sequence[str], layer: int) -> torch.Tensor:
    """(prompts, hidden) float32: layer ``layer``'s output at the last token of each prompt, chat template applied."""

    layers = checked_layer(model, layer)
    captured: list[torch.Tensor] = []

    def keep(module: nn.Module, args: tuple, output: Any) -> None:
        captured.append((output[0] if isinstance(output, tuple) else output).detach())

    device = next(model.parameters()).device
    results = []
    handle = layers[layer].register_forward_hook(keep)
    try:
        for start in range(0, len(prompts), ACTIVATION_BATCH):
            texts = [render_prompt(tokenizer, prompt) for prompt in prompts[start : start + ACTIVATION_BATCH]]
            batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
            mask = batch["attention_mask"]
            positions = (mask.long().cumsum(-1) - 1).clamp(min=0)
            captured.clear()
            with torch.inference_mode(), shared_kernels(model):  # the kernels generation runs on
                model(input_ids=batch["input_ids"], attention_mask=mask, position_ids=positions, use_cache=False)
            last = mask.shape[1] - 1 - mask.flip(-1).long().argmax(-1)  # last real token, whichever side pads
            results.append(captured[0][torch.arange(mask.shape[0], device=device), last].float().cpu())
    finally:
        handle.remove()
    return torch.cat(results)


def pair_vector(model: nn.Module, tokenizer: Any, pairs: Sequence[tuple[str, str]], layer: int) -> torch.Tensor:
    """The mean over pairs of (positive − negative) activation at the last token (CAA, DiffMean)."""
    positive = last_token_activations(model, tokenizer, [p for p, _ in pairs], layer)
    negative = last_token_activations(model, tokenizer, [n for _, n in pairs], layer)
    return (positive - negative).mean(0)


def instruction_differences(model: nn.Module, tokenizer: Any, measures: Sequence[InstructionMeasure], layer: int) -> torch.Tensor:
    """(measures, hidden): activation with the instruction − without it, per (prompt, instruction)."""
    prompts = list(dict.fromkeys(m.prompt for m in measures))
    with_text = dict(zip(prompts, last_token_activations(model, tokenizer, prompts, layer)))
    without = last_token_activations(model, tokenizer, [m.without for m in measures], layer)
    return torch.stack([with_text[m.prompt] for m in measures]) - without
