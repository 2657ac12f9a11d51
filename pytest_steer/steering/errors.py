"""Exceptions and the warning category raised by PASTA steering.

Kept free of torch so that option parsing can catch them without loading a model stack.
"""

from __future__ import annotations


class SteeringError(RuntimeError):
    """Steering cannot be applied as asked; the message names the problem and the fix."""


class UnsupportedModelError(SteeringError):
    """The model's architecture or attention implementation cannot carry the PASTA bias."""


class UnsupportedTokenizerError(SteeringError):
    """The tokenizer cannot map characters to tokens (it is not a fast tokenizer)."""


class HeadConfigError(SteeringError, ValueError):
    """A head configuration is malformed or names a layer or head the model does not have."""


class SpanLocationError(SteeringError, ValueError):
    """The text given for a row does not produce that row's tokens, so spans cannot be placed."""


class SteeringWarning(UserWarning):
    """A highlighted substring was not found in its prompt; that substring is not steered."""


def describe_missing(spans: list[str] | tuple[str, ...]) -> str:
    """The warning text for highlights a method could not find in their prompt."""
    return f"highlighted text not found in the prompt, so not emphasized: {', '.join(map(repr, spans))}"
