"""The 25 IFEval verifiable-instruction checkers, one class per instruction id.

Semantics follow the reference checkers of google-research's
``instruction_following_eval`` (newest version), including the quirks that
define the benchmark:

- keyword existence, keyword frequency, forbidden words, section splitters and
  custom postscript markers are matched as regular expressions, case-insensitive
  where the reference is, so ``"cat"`` also matches inside ``"category"``
  (forbidden words alone are bounded by ``\\b``);
- highlights count both ``*x*`` and ``**x**`` (``***x***`` counts twice);
- lines starting with ``-`` (``---`` included) count as bullet points;
- quotation accepts straight double quotes only;
- the letter-frequency check accepts any single character;
- undetectable language counts as followed.

Where the reference draws a random value for a missing argument, a missing
argument here is an error (:class:`InstructionError`).
"""

from __future__ import annotations

import difflib
import functools
import json
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from pytest_steer.ifeval import text
from pytest_steer.ifeval.arguments import (
    AT_LEAST,
    LESS_THAN,
    Arg,
    ArgumentValueError,
    InstructionError,
    normalize,
    parse_count,
    parse_letter,
    parse_pattern_list,
    parse_positive,
    parse_relation,
    parse_stripped,
    parse_stripped_pattern,
    parse_word,
)

EXACTLY = "exactly"


def _holds(count: int, relation: str, threshold: int) -> bool:
    if relation == LESS_THAN:
        return count < threshold
    if relation == AT_LEAST:
        return count >= threshold
    return count == threshold


def _amount(count: int, singular: str, plural: str | None = None) -> str:
    """``count`` followed by the noun in the right number: "1 comma", "2 commas"."""
    return f"{count} {singular if count == 1 else (plural or singular + 's')}"


def _clip(value: str, limit: int = 60) -> str:
    return value if len(value) <= limit else value[: limit - 3] + "..."


class Checker(ABC):
    """Decides whether a response follows one instruction."""

    instruction_id: ClassVar[str]
    arguments: ClassVar[tuple[Arg, ...]] = ()

    @classmethod  # noqa: B027 - an optional hook: most checkers need no cross-argument check
    def check_arguments(cls, parsed: dict[str, Any]) -> None:
        """Reject combinations of individually valid arguments; raise InstructionError."""

    @classmethod
    def build(cls, parsed: dict[str, Any], prompt: str) -> Checker:
        """The checker for already normalized arguments; ``prompt`` is the prompt answered."""
        return cls(**parsed)

    @abstractmethod
    def check(self, response: str) -> bool:
        """True when ``response`` follows the instruction."""

    @abstractmethod
    def explain(self, response: str) -> str:
        """What was found in ``response``, worded to say why it fails."""


class CountingChecker(Checker):
    """A checker that compares one count taken from the response with a threshold."""

    nouns: ClassVar[tuple[str, str]]
    """What is counted, singular and plural."""

    @abstractmethod
    def count(self, response: str) -> int:
        """The quantity the instruction constrains."""

    @abstractmethod
    def limit(self) -> tuple[str, int]:
        """The relation (less than, at least, exactly) and the threshold."""

    def check(self, response: str) -> bool:
        relation, threshold = self.limit()
        return _holds(self.count(response), relation, threshold)

    def explain(self, response: str) -> str:
        relation, threshold = self.limit()
        return f"found {_amount(self.count(response), *self.nouns)}, expected {relation} {threshold}"


CHECKERS: dict[str, type[Checker]] = {}


def _register(cls: type[Checker]) -> type[Checker]:
    CHECKERS[cls.instruction_id] = cls
    return cls


# -- keywords -----------------------------------------------------------------


@_register
@dataclass(frozen=True)
class KeywordExistence(Checker):
    instruction_id = "keywords:existence"
    arguments = (Arg("keywords", parse_pattern_list),)
    keywords: list[str]

    @functools.cached_property
    def _patterns(self) -> tuple[tuple[str, re.Pattern[str]], ...]:
        return tuple((word, re.compile(word, re.IGNORECASE)) for word in sorted(self.keywords))

    def _missing(self, response: str) -> list[str]:
        return [word for word, pattern in self._patterns if not pattern.search(response)]

    def check(self, response: str) -> bool:
        return all(pattern.search(response) for _, pattern in self._patterns)

    def explain(self, response: str) -> str:
        missing = self._missing(response)
        if not missing:
            return f"all keywords {sorted(self.keywords)} are present"
        return f"missing keyword(s) {missing}"


@_register
@dataclass(frozen=True)
class KeywordFrequency(CountingChecker):
    instruction_id = "keywords:frequency"
    arguments = (
        Arg("keyword", parse_stripped_pattern),
        Arg("frequency", parse_count),
        Arg("relation", parse_relation),
    )
    keyword: str
    frequency: int
    relation: str

    @property
    def nouns(self) -> tuple[str, str]:  # type: ignore[override]
        return f"occurrence of {self.keyword!r}", f"occurrences of {self.keyword!r}"

    @functools.cached_property
    def _pattern(self) -> re.Pattern[str]:
        return re.compile(self.keyword, re.IGNORECASE)

    def count(self, response: str) -> int:
        return sum(1 for _ in self._pattern.finditer(response))

    def limit(self) -> tuple[str, int]:
        return self.relation, self.frequency


@_register
@dataclass(frozen=True)
class ForbiddenWords(Checker):
    instruction_id = "keywords:forbidden_words"
    arguments = (Arg("forbidden_words", parse_pattern_list),)
    forbidden_words: list[str]

    @functools.cached_property
    def _patterns(self) -> tuple[tuple[str, re.Pattern[str]], ...]:
        words = sorted(set(self.forbidden_words))
        return tuple((word, re.compile(rf"\b{word}\b", re.IGNORECASE)) for word in words)

    def check(self, response: str) -> bool:
        return not any(pattern.search(response) for _, pattern in self._patterns)

    def explain(self, response: str) -> str:
        found = [word for word, pattern in self._patterns if pattern.search(response)]
        if not found:
            return "no forbidden word is used"
        return f"uses forbidden word(s) {found}"


@_register
@dataclass(frozen=True)
class LetterFrequency(CountingChecker):
    instruction_id = "keywords:letter_frequency"
    arguments = (
        Arg("letter", parse_letter),
        Arg("let_frequency", parse_count),
        Arg("let_relation", parse_relation),
    )
    letter: str
    let_frequency: int
    let_relation: str

    @classmethod
    def check_arguments(cls, parsed: dict[str, Any]) -> None:
        if len(parsed["letter"]) != 1:
            raise InstructionError(cls.instruction_id, "must stay a single character when lower-cased", argument="letter")

    @property
    def nouns(self) -> tuple[str, str]:  # type: ignore[override]
        return f"occurrence of {self.letter!r} (any case)", f"occurrences of {self.letter!r} (any case)"

    def count(self, response: str) -> int:
        return response.lower().count(self.letter)

    def limit(self) -> tuple[str, int]:
        return self.let_relation, self.let_frequency


# -- language and case --------------------------------------------------------


def _parse_language(value: Any) -> str:
    supported = text.supported_languages()
    if value not in supported:
        raise ArgumentValueError(f"must be a language code langdetect can detect ({', '.join(sorted(supported))}), got {value!r}")
    return value


def _language_found(response: str) -> str:
    language = text.detect_language(response)
    return "no language could be detected" if language is None else f"detected language {language!r}"


@_register
@dataclass(frozen=True)
class ResponseLanguage(Checker):
    instruction_id = "language:response_language"
    arguments = (Arg("language", _parse_language),)
    language: str

    def check(self, response: str) -> bool:
        detected = text.detect_language(response)
        # Text without detectable features counts as followed, as in IFEval.
        return detected is None or detected == self.language

    def explain(self, response: str) -> str:
        return f"{_language_found(response)}, expected {self.language!r}"


class _EnglishInOneCase(Checker):
    """English text entirely in one letter case (the reference also requires English)."""

    in_case: ClassVar[Callable[[str], bool]]
    offending: ClassVar[Callable[[str], bool]]  # a character that breaks the case
    offending_noun: ClassVar[str]
    expected: ClassVar[str]

    def check(self, response: str) -> bool:
        if not self.in_case(response):
            return False
        detected = text.detect_language(response)
        return detected is None or detected == "en"

    def explain(self, response: str) -> str:
        if not self.in_case(response):
            found = sum(1 for char in response if self.offending(char))
            return f"found {_amount(found, self.offending_noun)}, expected {self.expected}"
        return f"{_language_found(response)}, expected 'en'"


@_register
@dataclass(frozen=True)
class EnglishCapital(_EnglishInOneCase):
    instruction_id = "change_case:english_capital"
    in_case = staticmethod(str.isupper)
    offending = staticmethod(str.islower)
    offending_noun = "lower-case letter"
    expected = "all capitals"


@_register
@dataclass(frozen=True)
class EnglishLowercase(_EnglishInOneCase):
    instruction_id = "change_case:english_lowercase"
    in_case = staticmethod(str.islower)
    offending = staticmethod(str.isupper)
    offending_noun = "capital letter"
    expected = "all lower-case"


@_register
@dataclass(frozen=True)
class CapitalWordFrequency(CountingChecker):
    instruction_id = "change_case:capital_word_frequency"
    arguments = (Arg("capital_frequency", parse_count), Arg("capital_relation", parse_relation))
    nouns = ("word in all capital letters", "words in all capital letters")
    capital_frequency: int
    capital_relation: str

    def count(self, response: str) -> int:
        return sum(1 for token in text.word_tokens(response) if token.isupper())

    def limit(self) -> tuple[str, int]:
        return self.capital_relation, self.capital_frequency


# -- length -------------------------------------------------------------------


@_register
@dataclass(frozen=True)
class NumberOfSentences(CountingChecker):
    instruction_id = "length_constraints:number_sentences"
    arguments = (Arg("num_sentences", parse_count), Arg("relation", parse_relation))
    nouns = ("sentence", "sentences")
    num_sentences: int
    relation: str

    def count(self, response: str) -> int:
        return len(text.sentences(response))

    def limit(self) -> tuple[str, int]:
        return self.relation, self.num_sentences


@_register
@dataclass(frozen=True)
class NumberOfWords(CountingChecker):
    instruction_id = "length_constraints:number_words"
    arguments = (Arg("num_words", parse_count), Arg("relation", parse_relation))
    nouns = ("word", "words")
    num_words: int
    relation: str

    def count(self, response: str) -> int:
        return text.count_words(response)

    def limit(self) -> tuple[str, int]:
        return self.relation, self.num_words


_DIVIDER = re.compile(r"\s?\*\*\*\s?")


def _divided_paragraphs(response: str) -> int | None:
    """Paragraphs between ``***`` dividers; None when one between two dividers is empty."""
    parts = _DIVIDER.split(response)
    count = len(parts)
    last = len(parts) - 1
    for index, part in enumerate(parts):
        if not part.strip():
            if index in (0, last):
                count -= 1
            else:
                return None
    return count


@_register
@dataclass(frozen=True)
class NumberOfParagraphs(Checker):
    instruction_id = "length_constraints:number_paragraphs"
    arguments = (Arg("num_paragraphs", parse_count),)
    num_paragraphs: int

    def check(self, response: str) -> bool:
        return _divided_paragraphs(response) == self.num_paragraphs

    def explain(self, response: str) -> str:
        count = _divided_paragraphs(response)
        if count is None:
            return "found an empty paragraph between two *** dividers"
        return f"found {_amount(count, 'paragraph')} separated by ***, expected exactly {self.num_paragraphs}"


_PARAGRAPH_BREAK = re.compile(r"\n\n")
_FIRST_WORD_END = frozenset(".,?!'\"")


@_register
@dataclass(frozen=True)
class NthParagraphFirstWord(Checker):
    instruction_id = "length_constraints:nth_paragraph_first_word"
    arguments = (
        Arg("num_paragraphs", parse_positive),
        Arg("nth_paragraph", parse_positive),
        Arg("first_word", parse_word),
    )
    num_paragraphs: int
    nth_paragraph: int
    first_word: str

    @classmethod
    def check_arguments(cls, parsed: dict[str, Any]) -> None:
        if parsed["nth_paragraph"] > parsed["num_paragraphs"]:
            raise InstructionError(
                cls.instruction_id,
                f"must be at most num_paragraphs ({parsed['num_paragraphs']}), got {parsed['nth_paragraph']}",
                argument="nth_paragraph",
            )

    def _observe(self, response: str) -> tuple[int, str | None]:
        """Number of non-empty paragraphs, and the first word of the nth (None if there is none)."""
        # The nth paragraph is taken from the raw split, empty pieces included, as in IFEval.
        parts = _PARAGRAPH_BREAK.split(response)
        count = sum(1 for part in parts if part.strip())
        if self.nth_paragraph > count:
            return count, None
        paragraph = parts[self.nth_paragraph - 1].strip()
        if not paragraph:
            return count, None
        word = paragraph.split()[0].lstrip("'").lstrip('"')
        letters = []
        for char in word:
            if char in _FIRST_WORD_END:
                break
            letters.append(char.lower())
        return count, "".join(letters)

    def check(self, response: str) -> bool:
        count, word = self._observe(response)
        return word is not None and count == self.num_paragraphs and word == self.first_word

    def explain(self, response: str) -> str:
        count, word = self._observe(response)
        expected = f"expected {_amount(self.num_paragraphs, 'paragraph')} separated by blank lines"
        if word is None:
            return f"found {_amount(count, 'paragraph')} and no paragraph {self.nth_paragraph}; {expected}"
        return (
            f"found {_amount(count, 'paragraph')}, paragraph {self.nth_paragraph} starts with {word!r}; "
            f"{expected}, paragraph {self.nth_paragraph} starting with {self.first_word!r}"
        )


# -- detectable content -------------------------------------------------------


_PLACEHOLDER = re.compile(r"\[.*?\]")


@_register
@dataclass(frozen=True)
class NumberOfPlaceholders(CountingChecker):
    instruction_id = "detectable_content:number_placeholders"
    arguments = (Arg("num_placeholders", parse_count),)
    nouns = ("placeholder in square brackets", "placeholders in square brackets")
    num_placeholders: int

    def count(self, response: str) -> int:
        return len(_PLACEHOLDER.findall(response))

    def limit(self) -> tuple[str, int]:
        return AT_LEAST, self.num_placeholders


def _parse_postscript_marker(value: Any) -> str:
    marker = parse_stripped(value)
    parse_stripped_pattern(marker.lower())
    return marker


@_register
@dataclass(frozen=True)
class Postscript(Checker):
    instruction_id = "detectable_content:postscript"
    arguments = (Arg("postscript_marker", _parse_postscript_marker),)
    postscript_marker: str

    @functools.cached_property
    def _pattern(self) -> re.Pattern[str]:
        # Matched on the lower-cased response, anywhere in a line, as in IFEval.
        if self.postscript_marker == "P.P.S":
            marker = r"p\.\s?p\.\s?s"
        elif self.postscript_marker == "P.S.":
            marker = r"p\.\s?s\."
        else:
            marker = self.postscript_marker.lower()
        return re.compile(r"\s*" + marker + r".*$", re.MULTILINE)

    def check(self, response: str) -> bool:
        return self._pattern.search(response.lower()) is not None

    def explain(self, response: str) -> str:
        return f"no postscript starting with {self.postscript_marker!r} found"


# -- detectable format --------------------------------------------------------


_STAR_BULLET = re.compile(r"^\s*\*[^\*].*$", re.MULTILINE)
_DASH_BULLET = re.compile(r"^\s*-.*$", re.MULTILINE)


@_register
@dataclass(frozen=True)
class NumberOfBulletLists(CountingChecker):
    instruction_id = "detectable_format:number_bullet_lists"
    arguments = (Arg("num_bullets", parse_count),)
    nouns = ("bullet point", "bullet points")
    num_bullets: int

    def count(self, response: str) -> int:
        return len(_STAR_BULLET.findall(response)) + len(_DASH_BULLET.findall(response))

    def limit(self) -> tuple[str, int]:
        return EXACTLY, self.num_bullets


CONSTRAINED_RESPONSES = ("My answer is yes.", "My answer is no.", "My answer is maybe.")


@_register
@dataclass(frozen=True)
class ConstrainedResponse(Checker):
    instruction_id = "detectable_format:constrained_response"

    def check(self, response: str) -> bool:
        stripped = response.strip()
        return any(option in stripped for option in CONSTRAINED_RESPONSES)

    def explain(self, response: str) -> str:
        return f"contains none of {list(CONSTRAINED_RESPONSES)}"


_SINGLE_HIGHLIGHT = re.compile(r"\*[^\n\*]*\*")
_DOUBLE_HIGHLIGHT = re.compile(r"\*\*[^\n\*]*\*\*")


@_register
@dataclass(frozen=True)
class NumberOfHighlightedSections(CountingChecker):
    instruction_id = "detectable_format:number_highlighted_sections"
    arguments = (Arg("num_highlights", parse_count),)
    nouns = ("highlighted section (*text* or **text**)", "highlighted sections (*text* or **text**)")
    num_highlights: int

    def count(self, response: str) -> int:
        single = sum(1 for match in _SINGLE_HIGHLIGHT.findall(response) if match.strip("*").strip())
        double = sum(1 for match in _DOUBLE_HIGHLIGHT.findall(response) if match[2:-2].strip())
        return single + double

    def limit(self) -> tuple[str, int]:
        return AT_LEAST, self.num_highlights


@_register
@dataclass(frozen=True)
class MultipleSections(CountingChecker):
    instruction_id = "detectable_format:multiple_sections"
    arguments = (Arg("section_spliter", parse_stripped_pattern), Arg("num_sections", parse_count))
    section_spliter: str
    num_sections: int

    @property
    def nouns(self) -> tuple[str, str]:  # type: ignore[override]
        return f"section marked '{self.section_spliter} <number>'", f"sections marked '{self.section_spliter} <number>'"

    @functools.cached_property
    def _splitter(self) -> re.Pattern[str]:
        return re.compile(r"\s?" + self.section_spliter + r"\s?\d+\s?")

    def count(self, response: str) -> int:
        return len(self._splitter.split(response)) - 1

    def limit(self) -> tuple[str, int]:
        return AT_LEAST, self.num_sections


_JSON_FENCES = ("```json", "```Json", "```JSON", "```")


def _json_payload(response: str) -> str:
    payload = response.strip()
    for fence in _JSON_FENCES:
        payload = payload.removeprefix(fence)
    return payload.removesuffix("```").strip()


@_register
@dataclass(frozen=True)
class JsonFormat(Checker):
    instruction_id = "detectable_format:json_format"

    @staticmethod
    def _error(response: str) -> str | None:
        try:
            json.loads(_json_payload(response))
        except ValueError as error:
            return str(error)
        except RecursionError:
            return "nested too deeply to parse"
        return None

    def check(self, response: str) -> bool:
        return self._error(response) is None

    def explain(self, response: str) -> str:
        error = self._error(response)
        return "is valid JSON" if error is None else f"is not valid JSON ({error})"


_TITLE = re.compile(r"<<[^\n]+>>")


@_register
@dataclass(frozen=True)
class Title(Checker):
    instruction_id = "detectable_format:title"

    def check(self, response: str) -> bool:
        return any(title.lstrip("<").rstrip(">").strip() for title in _TITLE.findall(response))

    def explain(self, response: str) -> str:
        return "found no title wrapped in double angular brackets such as <<title>>"


# -- combination --------------------------------------------------------------


_RESPONSE_SEPARATOR = "******"


def _two_responses(response: str) -> list[str] | None:
    """The non-empty responses between ``******``; None when an inner one is empty."""
    parts = response.split(_RESPONSE_SEPARATOR)
    last = len(parts) - 1
    found = []
    for index, part in enumerate(parts):
        if part.strip():
            found.append(part)
        elif index not in (0, last):
            return None
    return found


@_register
@dataclass(frozen=True)
class TwoResponses(Checker):
    instruction_id = "combination:two_responses"

    def check(self, response: str) -> bool:
        found = _two_responses(response)
        return found is not None and len(found) == 2 and found[0].strip() != found[1].strip()

    def explain(self, response: str) -> str:
        found = _two_responses(response)
        if found is None:
            return "found an empty response between two ****** separators"
        if len(found) == 2 and found[0].strip() == found[1].strip():
            return "the two responses are identical"
        return f"found {_amount(len(found), 'response')} separated by ******, expected exactly 2 different ones"


@_register
@dataclass(frozen=True)
class RepeatPrompt(Checker):
    instruction_id = "combination:repeat_prompt"
    arguments = (Arg("prompt_to_repeat", parse_stripped, required=False),)
    prompt_to_repeat: str

    @classmethod
    def build(cls, parsed: dict[str, Any], prompt: str) -> Checker:
        # Without prompt_to_repeat the whole prompt is the request to repeat.
        to_repeat = parsed.get("prompt_to_repeat") or prompt.strip()
        if not to_repeat:
            raise InstructionError(cls.instruction_id, "is missing and the prompt is empty", argument="prompt_to_repeat")
        return cls(prompt_to_repeat=to_repeat)

    def check(self, response: str) -> bool:
        return response.strip().lower().startswith(self.prompt_to_repeat.lower())

    def explain(self, response: str) -> str:
        return f"starts with {_clip(response.strip())!r}, expected the request repeated word for word: {_clip(self.prompt_to_repeat)!r}"


# -- start and end ------------------------------------------------------------


@_register
@dataclass(frozen=True)
class EndChecker(Checker):
    instruction_id = "startend:end_checker"
    arguments = (Arg("end_phrase", parse_stripped),)
    end_phrase: str

    @staticmethod
    def _ending(response: str) -> str:
        return response.strip().strip('"').lower()

    def check(self, response: str) -> bool:
        return self._ending(response).endswith(self.end_phrase.lower())

    def explain(self, response: str) -> str:
        tail = self._ending(response)[-len(self.end_phrase) - 20 :]
        return f"ends with {tail!r}, expected it to end with {self.end_phrase!r}"


@_register
@dataclass(frozen=True)
class Quotation(Checker):
    instruction_id = "startend:quotation"

    def check(self, response: str) -> bool:
        stripped = response.strip()
        return len(stripped) > 1 and stripped[0] == '"' and stripped[-1] == '"'

    def explain(self, response: str) -> str:
        stripped = response.strip()
        ends = f"{stripped[:1]!r}...{stripped[-1:]!r}" if stripped else "nothing"
        return f"starts and ends with {ends}, expected straight double quotes '\"'"


# -- punctuation --------------------------------------------------------------


@_register
@dataclass(frozen=True)
class NoComma(Checker):
    instruction_id = "punctuation:no_comma"

    def check(self, response: str) -> bool:
        return "," not in response

    def explain(self, response: str) -> str:
        return f"found {_amount(response.count(','), 'comma')}, expected none"


INSTRUCTION_IDS: tuple[str, ...] = tuple(sorted(CHECKERS))


def unknown_instruction_id(instruction_id: str, known: Sequence[str] = INSTRUCTION_IDS) -> str:
    """The message for an id that is not one of ``known``, with the nearest ids when some are close."""
    close = difflib.get_close_matches(instruction_id, known, n=3)
    hint = f"did you mean {' or '.join(close)}?" if close else f"known ids: {', '.join(known)}"
    return f"unknown instruction id {instruction_id!r}; {hint}"


def _checker_class(instruction_id: str) -> type[Checker]:
    try:
        return CHECKERS[instruction_id]
    except (KeyError, TypeError):
        raise InstructionError(str(instruction_id), f"unknown instruction id; known ids: {', '.join(INSTRUCTION_IDS)}") from None


def validate_kwargs(instruction_id: str, kwargs: Mapping[str, Any] | None) -> dict[str, Any]:
    """The normalized arguments of one instruction.

    ``None`` values are dropped, integral floats become ints, word lists become
    lists of strings. Raises :class:`InstructionError` naming the id and the
    argument for an unknown id, an unknown argument, or a missing or invalid one.
    """
    cls = _checker_class(instruction_id)
    parsed = normalize(instruction_id, cls.arguments, kwargs)
    cls.check_arguments(parsed)
    return parsed


def build_checker(instruction_id: str, kwargs: Mapping[str, Any] | None, prompt: str = "") -> Checker:
    """The checker for one instruction of a prompt."""
    return _checker_class(instruction_id).build(validate_kwargs(instruction_id, kwargs), prompt)
