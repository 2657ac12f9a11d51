"""A model's sizes read off its config, under the names each family gives them.

A config.json is read as a dict as is (GPT-2 says ``n_layer``, ``n_head``, ``n_embd``); a
transformers config maps those names itself (its ``attribute_map``). Either is accepted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

LAYER_COUNT = ("num_hidden_layers", "n_layer", "num_layers", "n_layers")
HEAD_COUNT = ("num_attention_heads", "n_head", "num_heads", "n_heads")
HIDDEN_SIZE = ("hidden_size", "n_embd", "d_model")


def config_value(model_config: Any, name: str) -> Any:
    """The value of ``name`` in a config.json dict or a transformers config; None when unset."""
    return model_config.get(name) if isinstance(model_config, Mapping) else getattr(model_config, name, None)


def config_size(model_config: Any, names: Sequence[str]) -> int | None:
    """A size of the model's text decoder, under the first of ``names`` set: in a config.json dict, in its
    ``text_config`` then at the top; in a transformers config, in ``get_text_config()`` then the config itself
    (its ``attribute_map`` gives GPT-2's ``n_layer`` as ``num_hidden_layers``). None when none is set."""
    if model_config is None:
        return None
    if isinstance(model_config, Mapping):
        scopes = [model_config.get("text_config"), model_config]
    else:
        get_text_config = getattr(model_config, "get_text_config", None)
        scopes = [get_text_config() if callable(get_text_config) else None, model_config]
    for scope in scopes:
        for name in names:
            value = config_value(scope, name) if scope is not None else None
            if isinstance(value, int) and not isinstance(value, bool):
                return value
    return None
