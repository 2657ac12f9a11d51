"""Does steering work on the installed torch and transformers? Answered once, in milliseconds.

A tiny Qwen2 built from a config (a Llama-style decoder: two layers, grouped-query
attention, the first layer with a 4-token sliding window, shorter than the prompt) is
steered on a left-padded batch of two rows. Steering must change the logits, a KV-cache decode must
give the logits of a full steered forward at every step, the padded row must equal that
row alone, and leaving the block must restore the model. A release of transformers that
changes how attention is dispatched fails here, before a single case is generated, with
one message that names the installed version, the tested range and how to install a
tested release.
"""

from __future__ import annotations

import functools
from importlib import metadata

from pytest_steer.steering.errors import SteeringError

# The releases of transformers the project's CI runs the steering tests on: the lowest
# declared in pyproject.toml and the newest tested (pinned in constraints.txt).
TESTED_TRANSFORMERS = ("5.0.0", "5.25.0")
INSTALL_TESTED = f"pip install 'transformers=={TESTED_TRANSFORMERS[1]}'"


class IncompatibleStackError(SteeringError):
    """Steering gives wrong results (or none) with the installed libraries."""


def _installed(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def describe_failure(problem: str) -> str:
    low, high = TESTED_TRANSFORMERS
    return (
        f"steering does not work with the installed stack (transformers {_installed('transformers')}, torch "
        f"{_installed('torch')}): {problem}. pytest-steer is tested with transformers {low} to {high}; install a tested "
        f"release with `{INSTALL_TESTED}` (scripts/bootstrap.sh installs the whole tested set from constraints.txt)"
    )


@functools.cache
def check_steering_stack(attn_implementation: str = "eager") -> None:
    """Raise IncompatibleStackError unless PASTA is correct on this stack under ``attn_implementation``."""
    try:
        problem = _first_problem(attn_implementation)
    except Exception as exc:  # any crash of the probe is itself the incompatibility
        problem = f"a steered forward of a tiny model raised {type(exc).__name__}: {exc}"
    if problem is not None:
        raise IncompatibleStackError(describe_failure(problem))


def _first_problem(attn_implementation: str) -> str | None:
    import torch  # why: collection imports this module, and a fully cached run never loads torch or transformers
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from pytest_steer.steering.pasta.attention import PromptKeyBias, steerable_attention

    config = Qwen2Config(
        vocab_size=32,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        max_position_embeddings=64,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        use_sliding_window=True,
        sliding_window=4,
        layer_types=["sliding_attention", "full_attention"],
    )
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config).eval()
    torch.random.set_rng_state(generator_state)  # the probe leaves the caller's random numbers alone
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith(("q_proj.weight", "k_proj.weight")):
                parameter.mul_(8.0)  # peaked attention, so that the bias shows in the logits
    model.set_attn_implementation(attn_implementation)
    model.generation_config.pad_token_id = 0

    input_ids = torch.tensor([[5, 6, 7, 8, 9, 10, 11, 12], [0, 0, 0, 13, 14, 15, 16, 17]])
    attention_mask = (input_ids != 0).long()
    key_bias = torch.zeros(input_ids.shape)
    key_bias[0, 2:5] = -2.0
    key_bias[1, 4:6] = -2.0
    attention, num_heads = steerable_attention(model)
    layer_heads = {0: (0, 2), 1: tuple(range(num_heads))}

    def forward(ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        return model(input_ids=ids, attention_mask=mask, position_ids=positions).logits

    def steered(bias: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> PromptKeyBias:
        steering = PromptKeyBias(bias, ids, layer_heads, num_heads)
        steering.install(model, attention)
        return steering

    new_tokens = 3
    with torch.no_grad():
        plain = forward(input_ids, attention_mask)
        steering = steered(key_bias, input_ids, attention_mask)
        try:
            full = forward(input_ids, attention_mask)
            out = model.generate(
                input_ids=input_ids,
                attention_mask=attention_mask,
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                do_sample=False,
                output_logits=True,
                return_dict_in_generate=True,
            )
            recomputed = []
            for step in range(new_tokens):
                ids = out.sequences[:, : input_ids.shape[1] + step]
                mask = torch.cat([attention_mask, torch.ones_like(ids[:, input_ids.shape[1] :])], dim=1)
                recomputed.append(forward(ids, mask)[:, -1])
        finally:
            steering.uninstall()
        row_alone = input_ids[1:, 3:]
        steering = steered(key_bias[1:, 3:], row_alone, attention_mask[1:, 3:])
        try:
            alone = forward(row_alone, attention_mask[1:, 3:])
        finally:
            steering.uninstall()
        restored = forward(input_ids, attention_mask)

    if (full - plain).abs().max() < 1e-3:
        return "the steering bias did not reach attention (steered and unsteered logits are equal)"
    for step, logits in enumerate(recomputed):
        if not torch.allclose(out.logits[step], logits, atol=1e-4, rtol=1e-4):
            return f"token {step + 1} of a KV-cache decode differs from a full steered forward"
    if not torch.allclose(full[1, 3:], alone[0], atol=1e-4, rtol=1e-4):
        return "a left-padded row differs from the same row alone"
    if not torch.equal(restored, plain):
        return "the model was not restored after the steering block"
    return None
