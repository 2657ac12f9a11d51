"""The decoder layers of a causal LM and the width of its residual stream, where activation methods act."""

from __future__ import annotations

from torch import nn

from pytest_steer.model.config import HIDDEN_SIZE, LAYER_COUNT, config_size
from pytest_steer.steering.errors import SteeringError, UnsupportedModelError


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder layers of a causal LM (``model.model.layers`` and its kin), found by the config's layer count."""
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None) or type(model).__name__
    count = config_size(config, LAYER_COUNT)
    base = getattr(model, "base_model", model)
    for name in ("layers", "h", "blocks"):
        layers = getattr(base, name, None)
        if isinstance(layers, nn.ModuleList) and (count is None or len(layers) == count):
            return layers
    if count is not None:
        for _, module in base.named_modules():
            if isinstance(module, nn.ModuleList) and len(module) == count:
                return module
    raise UnsupportedModelError(
        f"actadd cannot find the decoder layers of this {model_type} model ({type(model).__name__}): no list of "
        f"{count} layers under model.{'model' if base is not model else ''}; pass the causal LM itself (e.g. LlamaForCausalLM)"
    )


def checked_layer(model: nn.Module, layer: int) -> nn.ModuleList:
    """The model's decoder layers, once ``layer`` is known to be one of them."""
    layers = decoder_layers(model)
    if not 0 <= layer < len(layers):
        raise SteeringError(f"actadd layer {layer} does not exist: this model has layers 0-{len(layers) - 1}")
    return layers


def hidden_size(model: nn.Module) -> int:
    size = config_size(getattr(model, "config", None), HIDDEN_SIZE)
    if size is None:
        raise UnsupportedModelError(f"actadd cannot read the hidden size of this {type(model).__name__} from its config")
    return size
