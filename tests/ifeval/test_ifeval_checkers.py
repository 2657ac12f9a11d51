"""Each of the 25 checkers on responses that follow and responses that do not (strict scoring)."""

from __future__ import annotations

from typing import Any

import pytest

from pytest_steer.ifeval import INSTRUCTION_IDS, describe_failure, evaluate


def strict(instruction_id: str, response: str, prompt: str = "", **kwargs: Any) -> bool:
    return evaluate(prompt, response, [instruction_id], [kwargs]).strict[0]


CASES: list[tuple[str, dict[str, Any], str, bool]] = [
    # keywords:existence matches substrings, case-insensitively
    ("keywords:existence", {"keywords": ["cat", "dog"]}, "A Cat met a DOG.", True),
    ("keywords:existence", {"keywords": ["cat", "dog"]}, "A cat sat alone.", False),
    ("keywords:existence", {"keywords": ["cat", "dog"]}, "A category of dogma.", True),
    # keywords:frequency counts substrings too
    ("keywords:frequency", {"keyword": "the", "frequency": 3, "relation": "at least"}, "The the THE", True),
    ("keywords:frequency", {"keyword": "the", "frequency": 3, "relation": "at least"}, "the cat, the dog", False),
    ("keywords:frequency", {"keyword": "the", "frequency": 3, "relation": "at least"}, "the, there, theme", True),
    ("keywords:frequency", {"keyword": " sun ", "frequency": 2, "relation": "less than"}, "One sun.", True),
    ("keywords:frequency", {"keyword": "sun", "frequency": 2, "relation": "less than"}, "sun and sunny", False),
    # keywords:forbidden_words is bounded by word boundaries
    ("keywords:forbidden_words", {"forbidden_words": ["bad"]}, "This is good.", True),
    ("keywords:forbidden_words", {"forbidden_words": ["bad"]}, "This is BAD.", False),
    ("keywords:forbidden_words", {"forbidden_words": ["bad"]}, "A badge is fine.", True),
    # keywords:letter_frequency accepts any single character, counts case-insensitively
    ("keywords:letter_frequency", {"letter": "a", "let_frequency": 3, "let_relation": "at least"}, "bAnAna", True),
    ("keywords:letter_frequency", {"letter": "A", "let_frequency": 3, "let_relation": "at least"}, "Apple", False),
    ("keywords:letter_frequency", {"letter": "!", "let_frequency": 2, "let_relation": "at least"}, "Hi!!", True),
    ("keywords:letter_frequency", {"letter": "#", "let_frequency": 1, "let_relation": "less than"}, "no hash", True),
    ("keywords:letter_frequency", {"letter": "#", "let_frequency": 1, "let_relation": "less than"}, "#tag", False),
    # language:response_language; text without any letters counts as followed
    ("language:response_language", {"language": "de"}, "Das Wetter ist heute sehr schön und die Sonne scheint.", True),
    ("language:response_language", {"language": "de"}, "The weather is very nice today and the sun is shining.", False),
    ("language:response_language", {"language": "de"}, "12345 !!!", True),
    # change_case
    ("change_case:english_capital", {}, "THIS IS ALL CAPITAL ENGLISH TEXT ABOUT THE WEATHER TODAY.", True),
    ("change_case:english_capital", {}, "THIS IS ALMOST all capital english text about the weather.", False),
    ("change_case:english_capital", {}, "DAS IST EIN DEUTSCHER SATZ UND ER IST LANG GENUG.", False),
    ("change_case:english_lowercase", {}, "this is a lowercase english sentence about the weather.", True),
    ("change_case:english_lowercase", {}, "This is not all lowercase.", False),
    ("change_case:english_lowercase", {}, "das ist ein deutscher satz und er ist lang genug.", False),
    (
        "change_case:capital_word_frequency",
        {"capital_frequency": 2, "capital_relation": "at least"},
        "I LOVE NLP",
        True,
    ),
    (
        "change_case:capital_word_frequency",
        {"capital_frequency": 2, "capital_relation": "at least"},
        "Hello World",
        False,
    ),
    # a hyphenated word is one word
    (
        "change_case:capital_word_frequency",
        {"capital_frequency": 2, "capital_relation": "less than"},
        "A STATE-OF-THE-ART tool",
        False,
    ),
    (
        "change_case:capital_word_frequency",
        {"capital_frequency": 2, "capital_relation": "less than"},
        "STATE-OF-THE-ART tools",
        True,
    ),
    # length_constraints:number_sentences, with Punkt's English abbreviations
    ("length_constraints:number_sentences", {"num_sentences": 3, "relation": "at least"}, "One. Two. Three.", True),
    ("length_constraints:number_sentences", {"num_sentences": 3, "relation": "less than"}, "One. Two. Three.", False),
    (
        "length_constraints:number_sentences",
        {"num_sentences": 3, "relation": "less than"},
        "Dr. Smith went home. He slept.",
        True,
    ),
    # length_constraints:number_words counts runs of word characters
    ("length_constraints:number_words", {"num_words": 3, "relation": "at least"}, "one two three", True),
    ("length_constraints:number_words", {"num_words": 3, "relation": "less than"}, "one two three", False),
    ("length_constraints:number_words", {"num_words": 2, "relation": "at least"}, "don't", True),
    # length_constraints:number_paragraphs splits on ***
    ("length_constraints:number_paragraphs", {"num_paragraphs": 2}, "First.\n***\nSecond.", True),
    ("length_constraints:number_paragraphs", {"num_paragraphs": 2}, "***\nFirst.\n***\nSecond.\n***", True),
    ("length_constraints:number_paragraphs", {"num_paragraphs": 2}, "First.\n***\n***\nSecond.", False),
    ("length_constraints:number_paragraphs", {"num_paragraphs": 2}, "Only one.", False),
    # length_constraints:nth_paragraph_first_word splits on blank lines
    (
        "length_constraints:nth_paragraph_first_word",
        {"num_paragraphs": 2, "nth_paragraph": 2, "first_word": "Then"},
        "First part.\n\nThen the second.",
        True,
    ),
    (
        "length_constraints:nth_paragraph_first_word",
        {"num_paragraphs": 2, "nth_paragraph": 2, "first_word": "then"},
        'First part.\n\n"Then," she said.',
        True,
    ),
    (
        "length_constraints:nth_paragraph_first_word",
        {"num_paragraphs": 2, "nth_paragraph": 2, "first_word": "then"},
        "First part.\n\nNext the second.",
        False,
    ),
    (
        "length_constraints:nth_paragraph_first_word",
        {"num_paragraphs": 2, "nth_paragraph": 2, "first_word": "then"},
        "First.\n\nThen second.\n\nA third.",
        False,
    ),
    # detectable_content
    ("detectable_content:number_placeholders", {"num_placeholders": 2}, "Dear [name], at [address].", True),
    ("detectable_content:number_placeholders", {"num_placeholders": 2}, "Dear [name].", False),
    ("detectable_content:postscript", {"postscript_marker": "P.S."}, "Hello.\n\nP.S. See you.", True),
    ("detectable_content:postscript", {"postscript_marker": "P.S."}, "Hello.\n\np.s. see you.", True),
    ("detectable_content:postscript", {"postscript_marker": "P.S."}, "Hello.\n\nPS see you.", False),
    ("detectable_content:postscript", {"postscript_marker": "P.P.S"}, "Hello.\n\nP. P. S. More.", True),
    ("detectable_content:postscript", {"postscript_marker": "P.P.S"}, "Hello.\n\nP.S. More.", False),
    ("detectable_content:postscript", {"postscript_marker": "Note:"}, "Hello.\nNOTE: more.", True),
    # detectable_format:number_bullet_lists counts * and - lines, --- included
    ("detectable_format:number_bullet_lists", {"num_bullets": 3}, "* a\n* b\n* c", True),
    ("detectable_format:number_bullet_lists", {"num_bullets": 3}, "* a\n* b", False),
    ("detectable_format:number_bullet_lists", {"num_bullets": 3}, "* a\n* b\n---", True),
    ("detectable_format:number_bullet_lists", {"num_bullets": 2}, "- a\n  - b\n**Bold** line", True),
    ("detectable_format:constrained_response", {}, "My answer is yes.", True),
    ("detectable_format:constrained_response", {}, "Yes.", False),
    # highlights: *x* and **x** both count, ***x*** counts twice, empty ones do not
    ("detectable_format:number_highlighted_sections", {"num_highlights": 2}, "*one* and **two**", True),
    ("detectable_format:number_highlighted_sections", {"num_highlights": 2}, "only *one*", False),
    ("detectable_format:number_highlighted_sections", {"num_highlights": 2}, "***x***", True),
    ("detectable_format:number_highlighted_sections", {"num_highlights": 1}, "** ** and * *", False),
    (
        "detectable_format:multiple_sections",
        {"section_spliter": "Section", "num_sections": 2},
        "Section 1\na\nSection 2\nb",
        True,
    ),
    ("detectable_format:multiple_sections", {"section_spliter": "Section", "num_sections": 2}, "Section 1\na", False),
    (
        "detectable_format:multiple_sections",
        {"section_spliter": "SECTION", "num_sections": 2},
        "Section 1\na\nSection 2\nb",
        False,
    ),
    ("detectable_format:json_format", {}, '{"a": 1}', True),
    ("detectable_format:json_format", {}, '```json\n{"a": [1, 2]}\n```', True),
    ("detectable_format:json_format", {}, "not json", False),
    ("detectable_format:title", {}, "<<My Title>>\nText.", True),
    ("detectable_format:title", {}, "<< >>\nText.", False),
    ("detectable_format:title", {}, "<<broken\ntitle>>", False),
    # combination
    ("combination:two_responses", {}, "First answer.\n******\nSecond answer.", True),
    ("combination:two_responses", {}, "Same.\n******\nSame.", False),
    ("combination:two_responses", {}, "A.\n******\n******\nB.", False),
    ("combination:two_responses", {}, "Just one.", False),
    ("combination:repeat_prompt", {"prompt_to_repeat": "Write a poem."}, "write a poem. Roses are red.", True),
    ("combination:repeat_prompt", {"prompt_to_repeat": "Write a poem."}, "Sure! Write a poem.", False),
    # startend
    ("startend:end_checker", {"end_phrase": "Any questions?"}, "Text here. Any questions?", True),
    ("startend:end_checker", {"end_phrase": "Any questions?"}, '"Text here. any questions?"', True),
    ("startend:end_checker", {"end_phrase": "Any questions?"}, "Any questions? Bye.", False),
    ("startend:quotation", {}, '  "Hello there."  ', True),
    ("startend:quotation", {}, "\u201cHello there.\u201d", False),
    ("startend:quotation", {}, '"', False),
    ("startend:quotation", {}, 'Hello "there"', False),
    # punctuation
    ("punctuation:no_comma", {}, "No commas here.", True),
    ("punctuation:no_comma", {}, "One, two.", False),
]


@pytest.mark.parametrize(("instruction_id", "kwargs", "response", "expected"), CASES)
def test_checker_verdict(instruction_id: str, kwargs: dict[str, Any], response: str, expected: bool) -> None:
    assert strict(instruction_id, response, **kwargs) is expected


def test_every_instruction_id_has_a_passing_and_a_failing_case() -> None:
    outcomes = {(case[0], case[3]) for case in CASES}
    assert len(INSTRUCTION_IDS) == 25
    for instruction_id in INSTRUCTION_IDS:
        assert (instruction_id, True) in outcomes, instruction_id
        assert (instruction_id, False) in outcomes, instruction_id


def test_repeat_prompt_falls_back_to_the_prompt_without_prompt_to_repeat() -> None:
    prompt = "Name three colours."
    assert strict("combination:repeat_prompt", "Name three colours. Red, blue, green.", prompt=prompt)
    assert not strict("combination:repeat_prompt", "Red, blue, green.", prompt=prompt)


@pytest.mark.parametrize(
    ("instruction_id", "kwargs", "response", "message"),
    [
        (
            "detectable_format:number_bullet_lists",
            {"num_bullets": 3},
            "* a\n* b",
            "detectable_format:number_bullet_lists: found 2 bullet points, expected exactly 3",
        ),
        ("punctuation:no_comma", {}, "a, b, c", "punctuation:no_comma: found 2 commas, expected none"),
        (
            "keywords:existence",
            {"keywords": ["cat", "dog"]},
            "a cat",
            "keywords:existence: missing keyword(s) ['dog']",
        ),
        (
            "keywords:frequency",
            {"keyword": "sun", "frequency": 2, "relation": "at least"},
            "one sun",
            "keywords:frequency: found 1 occurrence of 'sun', expected at least 2",
        ),
        (
            "length_constraints:number_paragraphs",
            {"num_paragraphs": 2},
            "a\n***\n***\nb",
            "length_constraints:number_paragraphs: found an empty paragraph between two *** dividers",
        ),
        (
            "language:response_language",
            {"language": "de"},
            "The weather is very nice today and the sun is shining.",
            "language:response_language: detected language 'en', expected 'de'",
        ),
        ("startend:quotation", {}, "   ", "startend:quotation: the response is empty"),
        ("punctuation:no_comma", {}, "fine", "punctuation:no_comma: followed"),
    ],
)
def test_describe_failure_says_what_was_found(instruction_id: str, kwargs: dict[str, Any], response: str, message: str) -> None:
    assert describe_failure(instruction_id, kwargs, response) == message


@pytest.mark.parametrize(("instruction_id", "kwargs", "response", "expected"), CASES)
def test_every_failing_case_has_a_reason(instruction_id: str, kwargs: dict[str, Any], response: str, expected: bool) -> None:
    result = evaluate("", response, [instruction_id], [kwargs])
    if expected:
        assert result.reasons == [None]
    else:
        (reason,) = result.reasons
        assert reason is not None and reason.startswith(f"{instruction_id}: ")
        assert len(reason) > len(instruction_id) + 10
