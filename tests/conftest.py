"""Shared fixtures: a tiny Llama saved like a real checkpoint, with the embedded tokenizer."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# pytester points HOME at a fresh folder for every run it starts; keep the converted embedded
# model where this session found it, so that each subprocess does not convert it again.
os.environ.setdefault("STEER_CACHE_DIR", str(Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "pytest-steer"))


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialized 2-layer Llama with SmolLM2's tokenizer, saved to disk."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from pytest_steer.model.loading import load_tokenizer

    tokenizer = load_tokenizer("embedded")
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
