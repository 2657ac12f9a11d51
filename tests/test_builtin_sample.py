"""Checks on the built-in sample suite, pytest_steer/builtin/ifeval_sample.jsonl."""

from __future__ import annotations

import importlib.resources
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

SAMPLE_FILE = importlib.resources.files("pytest_steer").joinpath("builtin", "ifeval_sample.jsonl")
REFERENCE_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "ifeval"

COLUMNS = {"key", "prompt", "instructions", "instruction_id_list", "kwargs"}

# Argument names of each instruction's checker. The names come from the IFEval reference
# data (test_argument_table_matches_reference_data re-derives them when that data is present).
ARGUMENTS: dict[str, frozenset[str]] = {
    "keywords:existence": frozenset({"keywords"}),
    "keywords:frequency": frozenset({"relation", "keyword", "frequency"}),
    "keywords:forbidden_words": frozenset({"forbidden_words"}),
    "keywords:letter_frequency": frozenset({"let_relation", "letter", "let_frequency"}),
    "language:response_language": frozenset({"language"}),
    "length_constraints:number_sentences": frozenset({"relation", "num_sentences"}),
    "length_constraints:number_paragraphs": frozenset({"num_paragraphs"}),
    "length_constraints:number_words": frozenset({"relation", "num_words"}),
    "length_constraints:nth_paragraph_first_word": frozenset({"first_word", "num_paragraphs", "nth_paragraph"}),
    "detectable_content:number_placeholders": frozenset({"num_placeholders"}),
    "detectable_content:postscript": frozenset({"postscript_marker"}),
    "detectable_format:number_bullet_lists": frozenset({"num_bullets"}),
    "detectable_format:constrained_response": frozenset(),
    "detectable_format:number_highlighted_sections": frozenset({"num_highlights"}),
    "detectable_format:multiple_sections": frozenset({"section_spliter", "num_sections"}),
    "detectable_format:json_format": frozenset(),
    "detectable_format:title": frozenset(),
    "combination:two_responses": frozenset(),
    "combination:repeat_prompt": frozenset({"prompt_to_repeat"}),
    "startend:end_checker": frozenset({"end_phrase"}),
    "change_case:capital_word_frequency": frozenset({"capital_frequency", "capital_relation"}),
    "change_case:english_capital": frozenset(),
    "change_case:english_lowercase": frozenset(),
    "punctuation:no_comma": frozenset(),
    "startend:quotation": frozenset(),
}

# The instruction ids of the reference PASTA study, which sampled single-instruction prompts.
STUDY_IDS = (
    "keywords:forbidden_words",
    "detectable_format:number_highlighted_sections",
    "language:response_language",
    "startend:end_checker",
)

RELATIONS = {"less than", "at least"}
RELATION_WORDING = {"less than": ("less than", "fewer than"), "at least": ("at least",)}
COUNT_ARGUMENTS = {
    "frequency",
    "let_frequency",
    "capital_frequency",
    "num_sentences",
    "num_paragraphs",
    "num_words",
    "nth_paragraph",
    "num_placeholders",
    "num_bullets",
    "num_highlights",
    "num_sections",
}
POSTSCRIPT_MARKERS = {"P.S.", "P.P.S"}
# Codes that both langdetect and the reference checker's language table know, with the
# English name the instruction sentence must use.
LANGUAGE_NAMES = {
    "fr": "French",
    "es": "Spanish",
    "de": "German",
    "it": "Italian",
    "pt": "Portuguese",
    "hi": "Hindi",
    "ru": "Russian",
    "ja": "Japanese",
    "ko": "Korean",
    "vi": "Vietnamese",
    "sw": "Swahili",
    "fi": "Finnish",
    "pl": "Polish",
    "bn": "Bengali",
    "ar": "Arabic",
}
ORDINALS = {1: "first", 2: "second", 3: "third", 4: "fourth", 5: "fifth", 6: "sixth", 7: "seventh"}
ANSWER_CHOICES = ('"My answer is yes."', '"My answer is no."', '"My answer is maybe."')

# Longest run of words a sample prompt may share with an IFEval prompt.
MAX_SHARED_WORDS = 6


@pytest.fixture(scope="module")
def rows() -> list[dict[str, Any]]:
    text = SAMPLE_FILE.read_text(encoding="utf-8")
    assert text.endswith("\n"), "the sample file must end with a newline"
    lines = text.splitlines()
    assert all(line.strip() for line in lines), "the sample file must have no blank lines"
    return [json.loads(line) for line in lines]


def instructions_of(rows: list[dict[str, Any]]):
    """Yields (row, instruction text, instruction id, kwargs) for every instruction."""
    for row in rows:
        yield from (
            (row, text, iid, kwargs)
            for text, iid, kwargs in zip(row["instructions"], row["instruction_id_list"], row["kwargs"], strict=True)
        )


def test_rows_have_split_ifeval_columns_and_types(rows):
    for row in rows:
        assert set(row) == COLUMNS, row.get("key")
        assert isinstance(row["key"], str) and isinstance(row["prompt"], str)
        for column in ("instructions", "instruction_id_list", "kwargs"):
            assert isinstance(row[column], list) and row[column], (row["key"], column)
        assert all(isinstance(text, str) and text.strip() for text in row["instructions"])
        assert all(isinstance(iid, str) for iid in row["instruction_id_list"])
        assert all(isinstance(kwargs, dict) for kwargs in row["kwargs"])


def test_keys_are_unique_and_sorted(rows):
    keys = [row["key"] for row in rows]
    assert all(re.fullmatch(r"s\d{3}", key) for key in keys), keys
    assert len(set(keys)) == len(keys)
    assert keys == sorted(keys)


def test_list_columns_align(rows):
    for row in rows:
        lengths = {len(row[c]) for c in ("instructions", "instruction_id_list", "kwargs")}
        assert len(lengths) == 1, row["key"]


def test_suite_size_and_instruction_coverage(rows):
    assert len(rows) >= 80
    counts = Counter(iid for row in rows for iid in row["instruction_id_list"])
    assert set(counts) == set(ARGUMENTS), set(counts) ^ set(ARGUMENTS)
    too_few = {iid: n for iid, n in counts.items() if n < 3}
    assert not too_few, too_few

    single = Counter(row["instruction_id_list"][0] for row in rows if len(row["instruction_id_list"]) == 1)
    assert all(single[iid] >= 3 for iid in ARGUMENTS), single
    assert all(single[iid] >= 5 for iid in STUDY_IDS), {iid: single[iid] for iid in STUDY_IDS}

    combined = [row for row in rows if len(row["instruction_id_list"]) > 1]
    assert len(combined) >= 12
    assert max(len(row["instruction_id_list"]) for row in combined) <= 3


def test_first_rows_hold_one_prompt_per_instruction_id(rows):
    leading = [row["instruction_id_list"] for row in rows[: len(ARGUMENTS)]]
    assert all(len(ids) == 1 for ids in leading)
    assert {ids[0] for ids in leading} == set(ARGUMENTS)


def test_every_instruction_is_a_span_of_its_prompt(rows):
    for row, text, _, _ in instructions_of(rows):
        assert text in row["prompt"], (row["key"], text)
        assert text == text.strip(), (row["key"], text)


def test_kwargs_carry_exactly_the_checker_arguments(rows):
    for row, _, iid, kwargs in instructions_of(rows):
        assert set(kwargs) == ARGUMENTS[iid], (row["key"], iid, sorted(kwargs))


def _check_value(name: str, value: Any, kwargs: dict[str, Any]) -> None:
    if name in ("relation", "let_relation", "capital_relation"):
        assert value in RELATIONS
    elif name in COUNT_ARGUMENTS:
        assert type(value) is int and value >= 1
    elif name in ("keywords", "forbidden_words"):
        assert isinstance(value, list) and value
        assert all(isinstance(word, str) and word.strip() == word and word for word in value)
    elif name == "letter":
        assert isinstance(value, str) and len(value) == 1 and value == value.lower()
    elif name == "first_word":
        assert isinstance(value, str) and re.fullmatch(r"[a-z]+", value)
        assert kwargs["nth_paragraph"] <= kwargs["num_paragraphs"]
    elif name == "language":
        assert value in LANGUAGE_NAMES
    elif name == "postscript_marker":
        assert value in POSTSCRIPT_MARKERS
    else:
        assert name in ("keyword", "section_spliter", "end_phrase", "prompt_to_repeat"), name
        assert isinstance(value, str) and value and value == value.strip()


def test_kwargs_values_have_reference_types_and_allowed_values(rows):
    for row, _, iid, kwargs in instructions_of(rows):
        for name, value in kwargs.items():
            try:
                _check_value(name, value, kwargs)
            except AssertionError as error:
                raise AssertionError(f"{row['key']} {iid}: bad {name}={value!r}") from error


def _stated(name: str, value: Any, text: str) -> bool:
    """Whether the instruction sentence states the argument's value."""
    if name == "nth_paragraph":
        return ORDINALS[value] in text
    if name in ("relation", "let_relation", "capital_relation"):
        return any(wording in text for wording in RELATION_WORDING[value])
    if name in COUNT_ARGUMENTS:
        return re.search(rf"\b{value}\b", text) is not None
    if name in ("keywords", "forbidden_words"):
        return all(f'"{word}"' in text for word in value)
    if name in ("keyword", "letter"):
        return f'"{value}"' in text
    if name == "language":
        return LANGUAGE_NAMES[value] in text
    if name == "first_word":
        return f'"{value.capitalize()}"' in text
    if name == "end_phrase":
        return f'"{value}"' in text
    return value in text  # postscript_marker, section_spliter


def test_instruction_text_states_its_arguments(rows):
    for row, text, iid, kwargs in instructions_of(rows):
        for name, value in kwargs.items():
            if name != "prompt_to_repeat":
                assert _stated(name, value, text), (row["key"], iid, name, value, text)
        if iid == "detectable_format:constrained_response":
            assert all(choice in text for choice in ANSWER_CHOICES), row["key"]
        if iid == "combination:two_responses":
            assert "******" in text, row["key"]


def test_repeat_prompt_repeats_the_text_before_the_instruction(rows):
    for row, text, iid, kwargs in instructions_of(rows):
        if iid == "combination:repeat_prompt":
            assert row["prompt"] == kwargs["prompt_to_repeat"] + "\n" + text, row["key"]


def test_kwargs_pass_the_checkers_validation(rows):
    ifeval = pytest.importorskip("pytest_steer.ifeval", reason="pytest_steer.ifeval is not importable")
    validate_kwargs = getattr(ifeval, "validate_kwargs", None)
    if validate_kwargs is None:
        pytest.skip("pytest_steer.ifeval does not expose validate_kwargs")
    for row, _, iid, kwargs in instructions_of(rows):
        # The file is written in normalized form, so validation must give the arguments back unchanged.
        assert validate_kwargs(iid, kwargs) == kwargs, (row["key"], iid)


def _reference_rows() -> list[dict[str, Any]]:
    path = REFERENCE_DIR / "input_data.jsonl"
    if not path.is_file():
        pytest.skip(f"IFEval reference data not found at {path}")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_argument_table_matches_reference_data():
    seen: dict[str, set[str]] = {}
    for row in _reference_rows():
        for iid, kwargs in zip(row["instruction_id_list"], row["kwargs"], strict=True):
            seen.setdefault(iid, set()).update(name for name, value in kwargs.items() if value is not None)
    assert {iid: frozenset(names) for iid, names in seen.items()} == ARGUMENTS


def _words(text: str) -> list[str]:
    # The three answer choices are fixed by the checker, so they do not count as shared text.
    for choice in ANSWER_CHOICES:
        text = text.replace(choice.strip('"'), " ")
    return re.findall(r"[a-z0-9']+", text.lower())


def _runs(words: list[str], size: int) -> set[tuple[str, ...]]:
    return {tuple(words[i : i + size]) for i in range(len(words) - size + 1)}


def test_prompts_are_not_taken_from_ifeval(rows):
    size = MAX_SHARED_WORDS + 1
    reference: set[tuple[str, ...]] = set()
    for row in _reference_rows():
        reference |= _runs(_words(row["prompt"]), size)
    shared = {row["key"]: sorted(" ".join(run) for run in _runs(_words(row["prompt"]), size) & reference) for row in rows}
    assert not {key: runs for key, runs in shared.items() if runs}
