"""What every model method checks on the forwards it steers: that they run the prompt batch it was given."""

from __future__ import annotations

import torch

from pytest_steer.steering.errors import SteeringError


def check_prompt_rows(input_ids: torch.Tensor | None, prompt_ids: torch.Tensor, batch_shape: tuple[int, ...], method: str) -> None:
    """Refuse a forward inside a steering block whose tokens hold the prompt's length but are not the
    steered prompts (each prompt row repeated for its responses); shorter forwards are decode steps."""
    if input_ids is None or input_ids.shape[1] < prompt_ids.shape[1]:
        return
    rows, prompt_rows = input_ids.shape[0], prompt_ids.shape[0]
    if rows % prompt_rows == 0:
        expected = prompt_ids.repeat_interleave(rows // prompt_rows, dim=0).to(input_ids.device)
        if torch.equal(input_ids[:, : prompt_ids.shape[1]], expected):
            return
    raise SteeringError(
        f"a forward inside the steering block starts with input_ids of shape {tuple(input_ids.shape)} that are not "
        f"the steered prompt batch {tuple(batch_shape)}; run the model (or generate) on the input_ids "
        f"given to {method}.apply(), or open a new apply() block for other prompts"
    )
