from __future__ import annotations

import pytest

from pytest_steer.steering import Emphasis, PreparedPrompt
from pytest_steer.steering.registry import bind_method_parameters

PROMPT = "Write a poem about the sea. Answer in all caps. Do not use any commas."


def test_each_highlight_is_wrapped_in_the_marker() -> None:
    prepared = Emphasis().prepare(PROMPT, ["Answer in all caps.", "Do not use any commas."])
    assert prepared == PreparedPrompt("Write a poem about the sea. **Answer in all caps.** **Do not use any commas.**")


def test_overlapping_and_touching_spans_are_marked_once() -> None:
    prepared = Emphasis().prepare(PROMPT, ["Answer in all", "in all caps.", "caps."])
    assert prepared.text == "Write a poem about the sea. **Answer in all caps.** Do not use any commas."
    assert Emphasis().prepare("abcdef", ["abc", "def"]).text == "**abcdef**"


def test_missing_and_empty_highlights_are_reported_and_the_rest_is_marked() -> None:
    prepared = Emphasis(marker="__").prepare(PROMPT, ["purple", "", "the sea"])
    assert prepared.text == "Write a poem about __the sea__. Answer in all caps. Do not use any commas."
    assert prepared.missing == ("purple", "")


def test_only_the_first_occurrence_is_marked() -> None:
    assert Emphasis().prepare("a b a", ["a"]).text == "**a** b a"


def test_parameters_name_the_marker_and_bad_ones_are_refused() -> None:
    assert Emphasis.create({"marker": "!!"}, model_config=None).params() == {"marker": "!!"}
    with pytest.raises(ValueError, match="emphasis takes no parameter 'alpha'; it takes marker"):
        bind_method_parameters(Emphasis, "emphasis", [("alpha", "2")])
    with pytest.raises(ValueError, match="non-empty string"):
        Emphasis(marker="")
