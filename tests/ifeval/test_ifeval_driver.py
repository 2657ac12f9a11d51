"""Strict and loose scoring of whole responses."""

from __future__ import annotations

import pytest

from pytest_steer.ifeval import evaluate
from pytest_steer.ifeval.driver import loose_variants


@pytest.mark.parametrize("response", ["", "   \n\t "])
def test_blank_response_follows_nothing(response: str) -> None:
    # no_comma and forbidden_words would accept blank text: blank responses fail anyway
    result = evaluate("p", response, ["punctuation:no_comma", "keywords:forbidden_words"], [{}, {"forbidden_words": ["x"]}])
    assert result.strict == [False, False]
    assert result.loose == [False, False]
    assert not result.follow_all_strict and not result.follow_all_loose
    assert result.reasons == [
        "punctuation:no_comma: the response is empty",
        "keywords:forbidden_words: the response is empty",
    ]


def test_loose_forgives_a_first_line() -> None:
    result = evaluate("p", "Sure, here it is:\nMy answer is yes.", ["punctuation:no_comma"], [{}])
    assert result.strict == [False]
    assert result.loose == [True]
    assert result.follow_all_loose and not result.follow_all_strict


def test_loose_forgives_a_last_line() -> None:
    result = evaluate("p", "Hello there.\nHope this helps, friend.", ["punctuation:no_comma"], [{}])
    assert (result.strict, result.loose) == ([False], [True])


def test_loose_forgives_markdown_stars() -> None:
    result = evaluate("p", '**"Quoted answer."**', ["startend:quotation"], [{}])
    assert (result.strict, result.loose) == ([False], [True])


def test_loose_does_not_count_blank_variants() -> None:
    # Without its only line the response is blank, which would have no comma.
    result = evaluate("p", "One, two.", ["punctuation:no_comma"], [{}])
    assert result.loose == [False]


def test_loose_variants_are_the_eight_of_ifeval_without_blanks_or_repeats() -> None:
    assert loose_variants("a*\nb\nc*") == ["a*\nb\nc*", "b\nc*", "a*\nb", "b", "a\nb\nc", "b\nc", "a\nb"]
    assert loose_variants("one line") == ["one line"]
    assert loose_variants("  ") == []


def test_repeated_instruction_ids_keep_their_own_arguments_and_positions() -> None:
    ids = ["keywords:existence", "punctuation:no_comma", "keywords:existence"]
    kwargs = [{"keywords": ["cat"]}, {}, {"keywords": ["dog"]}]
    result = evaluate("p", "A cat.", ids, kwargs)
    assert result.instruction_id_list == ids
    assert result.strict == [True, True, False]
    assert result.loose == [True, True, False]
    assert result.reasons == [None, None, "keywords:existence: missing keyword(s) ['dog']"]
    assert result.failures() == ["keywords:existence: missing keyword(s) ['dog']"]


def test_kwargs_may_be_none_for_instructions_without_arguments() -> None:
    result = evaluate("p", '"Fine."', ["startend:quotation", "punctuation:no_comma"], None)
    assert result.strict == [True, True]
    assert evaluate("p", "Fine.", ["punctuation:no_comma"], [None]).strict == [True]


def test_no_instructions_means_everything_is_followed() -> None:
    result = evaluate("p", "anything", [], [])
    assert result.strict == [] and result.loose == []
    assert result.follow_all_strict and result.follow_all_loose


def test_response_must_be_a_string() -> None:
    with pytest.raises(TypeError, match="response must be a string"):
        evaluate("p", None, ["punctuation:no_comma"], [{}])  # type: ignore[arg-type]
