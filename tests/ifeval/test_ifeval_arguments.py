"""validate_kwargs: normalizing dataset arguments and rejecting bad ones early."""

from __future__ import annotations

from typing import Any

import pytest

from pytest_steer.ifeval import INSTRUCTION_IDS, InstructionError, evaluate, validate_kwargs

SPLIT_IFEVAL_KEYS = (
    "num_highlights", "relation", "num_words", "num_placeholders", "prompt_to_repeat", "num_paragraphs",
    "first_word", "nth_paragraph", "postscript_marker", "keywords", "forbidden_words", "keyword", "frequency",
    "letter", "let_frequency", "let_relation", "language", "num_sentences", "section_spliter", "num_sections",
    "num_bullets", "end_phrase", "capital_frequency", "capital_relation",
)  # fmt: skip


def test_none_values_are_dropped_and_floats_become_ints() -> None:
    row = dict.fromkeys(SPLIT_IFEVAL_KEYS)
    row.update({"num_words": 300.0, "relation": "at least"})
    assert validate_kwargs("length_constraints:number_words", row) == {"num_words": 300, "relation": "at least"}


def test_no_argument_instructions_accept_empty_or_none() -> None:
    assert validate_kwargs("punctuation:no_comma", {}) == {}
    assert validate_kwargs("punctuation:no_comma", None) == {}
    assert validate_kwargs("punctuation:no_comma", dict.fromkeys(SPLIT_IFEVAL_KEYS)) == {}


def test_word_lists_become_lists_and_strings_are_stripped_where_ifeval_strips() -> None:
    assert validate_kwargs("keywords:existence", {"keywords": ("cat", "dog")}) == {"keywords": ["cat", "dog"]}
    assert validate_kwargs("startend:end_checker", {"end_phrase": " Bye. "}) == {"end_phrase": "Bye."}
    assert validate_kwargs("keywords:letter_frequency", {"letter": "Q", "let_frequency": 2, "let_relation": "at least"}) == {
        "letter": "q",
        "let_frequency": 2,
        "let_relation": "at least",
    }


NO_ARGUMENTS = {
    "change_case:english_capital", "change_case:english_lowercase", "combination:two_responses",
    "detectable_format:constrained_response", "detectable_format:json_format", "detectable_format:title",
    "punctuation:no_comma", "startend:quotation",
    "combination:repeat_prompt",  # prompt_to_repeat defaults to the prompt
}  # fmt: skip


@pytest.mark.parametrize("instruction_id", INSTRUCTION_IDS)
def test_only_instructions_with_required_arguments_reject_an_empty_mapping(instruction_id: str) -> None:
    if instruction_id in NO_ARGUMENTS:
        assert validate_kwargs(instruction_id, {}) == {}
    else:
        with pytest.raises(InstructionError, match="required but missing"):
            validate_kwargs(instruction_id, {})


@pytest.mark.parametrize(
    ("instruction_id", "kwargs", "argument", "fragment"),
    [
        ("keywords:exist", {}, None, "unknown instruction id"),
        ("length_constraints:number_words", {"relation": "at least"}, "num_words", "required but missing"),
        ("length_constraints:number_words", {"num_words": None, "relation": "at least"}, "num_words", "missing"),
        ("length_constraints:number_words", {"num_words": 2.5, "relation": "at least"}, "num_words", "whole number"),
        ("length_constraints:number_words", {"num_words": -1, "relation": "at least"}, "num_words", "whole number"),
        ("length_constraints:number_words", {"num_words": True, "relation": "at least"}, "num_words", "whole number"),
        ("length_constraints:number_words", {"num_words": "3", "relation": "at least"}, "num_words", "whole number"),
        ("length_constraints:number_words", {"num_words": 3, "relation": "at most"}, "relation", "less than"),
        (
            "length_constraints:number_words",
            {"num_words": 3, "relation": "at least", "letter": "a"},
            "letter",
            "unknown argument",
        ),
        ("keywords:existence", {"keywords": []}, "keywords", "at least one"),
        ("keywords:existence", {"keywords": "cat"}, "keywords", "list of strings"),
        ("keywords:existence", {"keywords": ["ok", "(broken"]}, "keywords", "regular expression"),
        (
            "keywords:letter_frequency",
            {"letter": "ab", "let_frequency": 1, "let_relation": "at least"},
            "letter",
            "single",
        ),
        (
            "keywords:letter_frequency",
            {"letter": " ", "let_frequency": 1, "let_relation": "at least"},
            "letter",
            "single",
        ),
        ("language:response_language", {"language": "xx"}, "language", "langdetect"),
        ("startend:end_checker", {"end_phrase": "   "}, "end_phrase", "non-empty"),
        (
            "length_constraints:nth_paragraph_first_word",
            {"num_paragraphs": 2, "nth_paragraph": 3, "first_word": "the"},
            "nth_paragraph",
            "at most num_paragraphs",
        ),
        (
            "length_constraints:nth_paragraph_first_word",
            {"num_paragraphs": 2, "nth_paragraph": 1, "first_word": "two words"},
            "first_word",
            "single word",
        ),
    ],
)
def test_invalid_arguments_name_the_id_and_the_argument(
    instruction_id: str, kwargs: dict[str, Any], argument: str | None, fragment: str
) -> None:
    with pytest.raises(InstructionError) as caught:
        validate_kwargs(instruction_id, kwargs)
    error = caught.value
    assert isinstance(error, ValueError)
    assert error.instruction_id == instruction_id
    assert error.argument == argument
    assert str(error).startswith(instruction_id)
    if argument is not None:
        assert repr(argument) in str(error)
    assert fragment in str(error)


def test_evaluate_rejects_bad_arguments_before_checking() -> None:
    with pytest.raises(InstructionError, match="num_bullets"):
        evaluate("p", "* a", ["punctuation:no_comma", "detectable_format:number_bullet_lists"], [{}, {}])


def test_evaluate_rejects_mismatched_kwargs_length() -> None:
    with pytest.raises(ValueError, match="one kwargs mapping per instruction"):
        evaluate("p", "r", ["punctuation:no_comma"], [{}, {}])


def test_numpy_values_from_dataframes_are_accepted() -> None:
    numpy = pytest.importorskip("numpy")
    normalized = validate_kwargs("keywords:frequency", {"keyword": numpy.str_("sun"), "frequency": numpy.int64(2), "relation": "at least"})
    assert normalized == {"keyword": "sun", "frequency": 2, "relation": "at least"}
    assert type(normalized["frequency"]) is int
    assert validate_kwargs("keywords:existence", {"keywords": numpy.array(["a", "b"])}) == {"keywords": ["a", "b"]}
