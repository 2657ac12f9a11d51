"""Finding highlighted substrings as token spans of the exact sequence the model sees.

Positions come from a fast tokenizer's offset mapping over the text that produced the
row's tokens (chat template, BOS and all), aligned to the row as it sits in a left-padded
batch. The text is either given by the caller (the templated prompt it tokenized) or
recovered by decoding the row, in which case it must tokenize back to the same ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pytest_steer.steering.errors import SpanLocationError, UnsupportedTokenizerError

TokenSpan = tuple[int, int]  # [start, end) token positions in the padded row


def locate_spans(
    tokenizer: Any,
    input_ids_row: Sequence[int] | Any,
    substrings: Sequence[str],
    *,
    text: str | None = None,
    attention_mask_row: Sequence[int] | Any | None = None,
) -> tuple[list[TokenSpan], list[str]]:
    """Token spans of each found substring (first occurrence) and the substrings not found.

    ``input_ids_row`` is one row as the model receives it, left padding included;
    ``attention_mask_row`` marks its real tokens (all real when omitted). ``text`` is the
    string that was tokenized into the row; without it the row is decoded. A span covers
    every token that overlaps the substring's characters. An empty substring, or one that
    does not occur in the text, is returned in the missing list and gets no span.
    """
    if not getattr(tokenizer, "is_fast", False):
        raise UnsupportedTokenizerError(
            f"{type(tokenizer).__name__} is not a fast tokenizer, so token offsets are unavailable; "
            "load it with AutoTokenizer.from_pretrained(..., use_fast=True)"
        )
    ids = _as_list(input_ids_row)
    start = _first_real_position(ids, None if attention_mask_row is None else _as_list(attention_mask_row))
    real_ids = ids[start:]
    text, offsets = _text_and_offsets(tokenizer, real_ids, text)

    spans: list[TokenSpan] = []
    missing: list[str] = []
    for substring in substrings:
        char_start = text.find(substring) if substring else -1
        if char_start < 0:
            missing.append(substring)
            continue
        char_end = char_start + len(substring)
        covered = [index for index, (begin, end) in enumerate(offsets) if end > begin and begin < char_end and end > char_start]
        if not covered:
            missing.append(substring)
            continue
        spans.append((start + covered[0], start + covered[-1] + 1))
    return spans, missing


def _as_list(row: Sequence[int] | Any) -> list[int]:
    return [int(value) for value in (row.tolist() if hasattr(row, "tolist") else row)]


def _first_real_position(ids: list[int], mask: list[int] | None) -> int:
    if mask is None:
        return 0
    if len(mask) != len(ids):
        raise SpanLocationError(f"attention mask row has {len(mask)} entries for {len(ids)} tokens; pass matching rows")
    start = next((index for index, value in enumerate(mask) if value), len(mask))
    if not all(mask[start:]):
        raise SpanLocationError(
            "the row is not left-padded (a masked token follows a real one); tokenize with tokenizer.padding_side = 'left'"
        )
    return start


def _text_and_offsets(tokenizer: Any, real_ids: list[int], text: str | None) -> tuple[str, list[tuple[int, int]]]:
    if text is None:
        decoded = tokenizer.decode(real_ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
        encoding = tokenizer(decoded, add_special_tokens=False, return_offsets_mapping=True)
        if encoding["input_ids"] != real_ids:
            raise SpanLocationError(
                "the decoded row does not tokenize back to the same tokens, so character positions are ambiguous; "
                "pass the texts that were tokenized (texts=...)"
            )
        return decoded, [tuple(pair) for pair in encoding["offset_mapping"]]
    # The caller may have tokenized with or without the tokenizer's special tokens (BOS).
    for add_special_tokens in (True, False):
        encoding = tokenizer(text, add_special_tokens=add_special_tokens, return_offsets_mapping=True)
        if encoding["input_ids"] == real_ids:
            return text, [tuple(pair) for pair in encoding["offset_mapping"]]
    raise SpanLocationError(
        f"text {_preview(text)} does not tokenize to the row's {len(real_ids)} tokens; "
        "pass exactly the text (after the chat template) that produced input_ids"
    )


def _preview(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")
