"""Which attention heads PASTA steers: head configurations, their CLI form and the default.

A head configuration has AISteer360's two forms: a list of layer indices (every head of
those layers) or a mapping ``{layer: [head, ...]}``. This module is free of torch so the
command-line options can be parsed and checked without loading a model stack.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

from pytest_steer.steering.errors import HeadConfigError

HeadConfig = list[int] | dict[int, list[int]]

# Layer selection (and head selection) after normalization: None means every head of the layer.
LayerHeads = dict[int, tuple[int, ...] | None]

_ITEM = re.compile(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?")


def default_head_layers(num_layers: int) -> list[int]:
    """The middle 4/7 of the depth: layers round(2L/7) to round(6L/7) - 1, every head.

    For the 28 layers of Qwen2.5-1.5B this is layers 8..23, the reference study's choice;
    for the 30 layers of SmolLM2-135M it is 9..25. Rounding is half up, in integers.
    """
    if num_layers < 1:
        raise HeadConfigError(f"a model needs at least one layer to steer, got num_layers={num_layers}")
    start = (4 * num_layers + 7) // 14
    stop = (12 * num_layers + 7) // 14
    return list(range(start, stop))


def parse_heads(text: str, num_layers: int | None = None, *, argument: str = "heads") -> HeadConfig:
    """Parse a head configuration's text form: layers ``"8,9,10"``, ranges ``"8-23"``, mixes
    ``"0-3,7"``, or a JSON object of layer -> heads ``'{"8": [0, 1], "9": [2]}'``.

    Raises ValueError (a HeadConfigError) naming the position and the problem. With
    ``num_layers``, layers beyond the model's depth are rejected too. Messages start with
    ``argument``, so a caller can name its own option (``argument="--steer-heads"``).
    """
    stripped = text.strip()
    if not stripped:
        raise HeadConfigError(f"{argument} is empty; give layers like '8-23' or a JSON object like '{{\"8\": [0, 1]}}'")
    config: HeadConfig
    if stripped.endswith(".json"):  # a head set in a file, as python -m pytest_steer profile writes it
        config = _parse_json_heads(_read_head_file(stripped, argument), f"{argument} {stripped}")
    elif stripped.startswith("{"):
        config = _parse_json_heads(text, argument)
    else:
        config = _parse_layer_list(text, argument)
    if num_layers is not None:
        layers = config if isinstance(config, list) else list(config)
        too_deep = [layer for layer in layers if layer >= num_layers]
        if too_deep:
            raise HeadConfigError(
                f"{argument} {text!r} names layer {too_deep[0]}, but the model has {num_layers} layers "
                f"(0-{num_layers - 1}); choose layers below {num_layers}"
            )
    return config


def _read_head_file(path: str, argument: str) -> str:
    file = Path(path).expanduser()
    if not file.is_file():
        raise HeadConfigError(
            f"{argument} {path!r} names no file; give the heads.json that python -m pytest_steer profile wrote, "
            "layers like '8-23' or a JSON object like '{\"8\": [0, 1]}'"
        )
    return file.read_text()


def _parse_layer_list(text: str, argument: str) -> list[int]:
    layers: list[int] = []
    position = 0
    for item in text.split(","):
        match = _ITEM.fullmatch(item)
        if match is None:
            raise HeadConfigError(
                f"{argument} {text!r}: item {item.strip()!r} at position {position} is not a layer number "
                "or a range A-B; use e.g. '8,9,10', '8-23' or '0-3,7'"
            )
        first = int(match.group(1))
        last = int(match.group(2)) if match.group(2) is not None else first
        if last < first:
            raise HeadConfigError(
                f"{argument} {text!r}: range {item.strip()!r} at position {position} runs backwards; write it as {last}-{first}"
            )
        layers.extend(range(first, last + 1))
        position += len(item) + 1
    return sorted(set(layers))


def _parse_json_heads(text: str, argument: str) -> dict[int, list[int]]:
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise HeadConfigError(f"{argument} {text!r} is not valid JSON: {exc.msg} at position {exc.pos}") from None
    if not isinstance(raw, dict):
        raise HeadConfigError(f"{argument} {text!r} must be a JSON object of layer -> list of heads")
    config: dict[int, list[int]] = {}
    for key, heads in raw.items():
        if not key.strip().isdigit():
            raise HeadConfigError(f"{argument} {text!r}: key {key!r} is not a layer number")
        if not isinstance(heads, list) or not heads or not all(_is_index(head) for head in heads):
            raise HeadConfigError(f"{argument} {text!r}: layer {key} must map to a non-empty list of head numbers, got {heads!r}")
        config[int(key)] = sorted(set(heads))
    if not config:
        raise HeadConfigError(f"{argument} {text!r} selects no layer")
    return config


def _is_index(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def normalize_head_config(head_config: Iterable[int] | Mapping[int | str, Iterable[int]]) -> LayerHeads:
    """Check the form of a head configuration, without a model; None stands for every head."""
    if isinstance(head_config, (str, bytes)):
        raise HeadConfigError(f"head_config {head_config!r} is a string; parse it with parse_heads() or pass a list of layers")
    selection: LayerHeads = {}
    if isinstance(head_config, Mapping):
        for key, heads in head_config.items():
            layer = _layer_index(key)
            if isinstance(heads, (str, bytes)) or not isinstance(heads, Iterable):
                raise HeadConfigError(f"head_config layer {layer} must map to a list of head indices, got {heads!r}")
            head_list = list(heads)
            if not head_list or not all(_is_index(head) for head in head_list):
                raise HeadConfigError(f"head_config layer {layer} must map to a non-empty list of head indices >= 0, got {head_list!r}")
            selection[layer] = tuple(sorted(set(head_list)))
    elif isinstance(head_config, Iterable):
        for item in head_config:
            selection[_layer_index(item)] = None
    else:
        raise HeadConfigError(f"head_config must be a list of layers or a dict of layer -> heads, got {type(head_config).__name__}")
    if not selection:
        raise HeadConfigError("head_config selects no layer; give at least one layer, e.g. default_head_layers(n)")
    return dict(sorted(selection.items()))


def _layer_index(value: object) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    if _is_index(value):
        return int(value)  # type: ignore[arg-type]
    raise HeadConfigError(f"head_config layer {value!r} is not a layer index >= 0")


def resolve_heads(selection: LayerHeads, num_layers: int, num_heads: int) -> dict[int, tuple[int, ...]]:
    """Expand 'every head' and check every index against the model's depth and width."""
    resolved: dict[int, tuple[int, ...]] = {}
    for layer, heads in selection.items():
        if layer >= num_layers:
            raise HeadConfigError(
                f"head_config names layer {layer}, but the model has {num_layers} layers (0-{num_layers - 1}); "
                "drop it or use default_head_layers(num_layers)"
            )
        if heads is None:
            resolved[layer] = tuple(range(num_heads))
            continue
        beyond = [head for head in heads if head >= num_heads]
        if beyond:
            raise HeadConfigError(
                f"head_config names head {beyond[0]} of layer {layer}, but the model has {num_heads} attention heads "
                f"per layer (0-{num_heads - 1}); use head indices below {num_heads}"
            )
        resolved[layer] = heads
    return resolved
