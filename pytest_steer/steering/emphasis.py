"""``emphasis``: the prompt baseline of the PASTA paper, which marks the emphasized text in the prompt itself.

Each highlighted span (its first occurrence in the prompt) is wrapped in ``marker``,
``**`` by default, the Markdown for bold that chat models read as emphasis:
``Answer in all caps.`` becomes ``**Answer in all caps.**``. Overlapping or touching
spans are merged first, so a character is marked at most once. The model itself runs
unchanged. A span that does not occur in the prompt is reported as missing, as PASTA
reports a span it cannot place.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pytest_steer.steering.method import PreparedPrompt, SteeringMethod


class Emphasis(SteeringMethod):
    name = "emphasis"
    version = 1

    def __init__(self, marker: str = "**") -> None:
        if not isinstance(marker, str) or not marker:
            raise ValueError(f"emphasis marker must be a non-empty string, got {marker!r}")
        self.marker = marker

    def __repr__(self) -> str:
        return f"Emphasis(marker={self.marker!r})"

    def params(self) -> dict[str, Any]:
        return {"marker": self.marker}

    def prepare(self, prompt: str, highlights: Sequence[str]) -> PreparedPrompt:
        spans: list[tuple[int, int]] = []
        missing: list[str] = []
        for text in highlights:
            start = prompt.find(text) if text else -1
            if start < 0:
                missing.append(text)
            else:
                spans.append((start, start + len(text)))
        marked, position = [], 0
        for start, end in _merged(spans):
            marked += [prompt[position:start], self.marker, prompt[start:end], self.marker]
            position = end
        marked.append(prompt[position:])
        return PreparedPrompt("".join(marked), tuple(missing))


def _merged(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged
