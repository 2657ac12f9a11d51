"""Which model families PASTA can steer, decided from a model's config alone: no torch, no transformers import."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

from pytest_steer.steering.errors import UnsupportedModelError


def check_model_family(model_type: str | None, *, is_encoder_decoder: bool = False) -> None:
    """Refuse, from a config alone, a model type PASTA cannot steer.

    PASTA steers decoder-only models whose transformers modeling code calls the attention
    interface. A type transformers does not ship (remote code) passes here; the loaded model
    is checked by ``steerable_attention``.
    """
    if is_encoder_decoder:
        raise UnsupportedModelError(
            f"PASTA steers decoder-only models; {model_type!r} is an encoder-decoder. Use a decoder-only model, or a method "
            "that changes only the prompt (emphasis)"
        )
    if not model_type:
        return
    # Read from the installed files, not imported: collection must not import transformers (a fully cached run never does).
    package = model_type.replace("-", "_")
    try:
        modeling = metadata.distribution("transformers").locate_file(f"transformers/models/{package}/modeling_{package}.py")
        source = Path(modeling).read_text(encoding="utf-8")
    except (metadata.PackageNotFoundError, OSError):  # a type transformers names otherwise, or does not ship: checked once loaded
        return
    if "ALL_ATTENTION_FUNCTIONS" not in source:
        raise UnsupportedModelError(no_interface(model_type, f"transformers.models.{package}.modeling_{package}"))


def no_interface(model_type: str | None, where: str) -> str:
    return (
        f"PASTA cannot steer {model_type!r}: its modeling code ({where}) does not run attention through transformers' "
        "attention interface (ALL_ATTENTION_FUNCTIONS), where PASTA adds its bias. Use a model whose attention does, or a "
        "method that changes only the prompt (emphasis)"
    )
