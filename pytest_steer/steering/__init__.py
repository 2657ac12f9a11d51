"""Steering methods: the interface, PASTA attention steering, ActAdd activation addition and the emphasis prompt baseline.

``from pytest_steer.steering import PASTA`` (or ``ActAdd``) loads torch; the helpers and the exceptions
(``parse_heads``, ``default_head_layers``, ``locate_spans``, ``SteeringError`` ...) do not,
so option parsing can use them while the plugin stays free of torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from pytest_steer.steering.emphasis import Emphasis
from pytest_steer.steering.errors import (
    HeadConfigError,
    SpanLocationError,
    SteeringError,
    SteeringWarning,
    UnsupportedModelError,
    UnsupportedTokenizerError,
    describe_missing,
)
from pytest_steer.steering.method import PreparedPrompt, PromptBatch, RunContext, SteeredBatch, SteeringMethod
from pytest_steer.steering.parameters import REQUIRED, FilePath, Parameter
from pytest_steer.steering.pasta.heads import HeadConfig, default_head_layers, parse_heads
from pytest_steer.steering.pasta.spans import locate_spans

_LAZY = {
    "ActAdd": "pytest_steer.steering.actadd.method",
    "PASTA": "pytest_steer.steering.pasta.method",
    "SteeredRun": "pytest_steer.steering.pasta.steered",
    "prompt_key_bias": "pytest_steer.steering.pasta.steered",
}

__all__ = [
    "PASTA",
    "ActAdd",
    "REQUIRED",
    "Emphasis",
    "FilePath",
    "Parameter",
    "PreparedPrompt",
    "PromptBatch",
    "RunContext",
    "SteeredBatch",
    "SteeringMethod",
    "HeadConfig",
    "HeadConfigError",
    "SpanLocationError",
    "SteeredRun",
    "SteeringError",
    "SteeringWarning",
    "UnsupportedModelError",
    "UnsupportedTokenizerError",
    "default_head_layers",
    "describe_missing",
    "locate_spans",
    "parse_heads",
    "prompt_key_bias",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
