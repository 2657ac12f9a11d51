"""The gate language: expressions on config aggregates, and the two forms a check takes.

Grammar (whitespace is free between tokens)::

    gate      := [selector ":"] lhs op number
    selector  := "alpha=" number | "baseline" | "all" | config-name
    lhs       := metric | metric "-" "baseline"
    op        := ">=" | ">" | "<=" | "<"
    metric    := "strict_prompt_accuracy" | "strict_instruction_accuracy"
               | "loose_prompt_accuracy" | "loose_instruction_accuracy" | "quality"
               | "follow_rate[" instruction-id "]" | "loose_follow_rate[" instruction-id "]"

A config name is made of letters, digits, ``_`` and ``.`` (``alpha10``, ``alpha2.5``);
an instruction id is anything up to the closing bracket (``detectable_format:title``).

Examples::

    strict_prompt_accuracy >= 0.5                     every config, baseline included
    alpha=10: strict_prompt_accuracy - baseline >= 0  steering at alpha 10 must not hurt
    quality - baseline >= -0.5                        every steered config
    baseline: loose_instruction_accuracy > 0.6
    alpha10: follow_rate[detectable_format:title] >= 0.8

Without a selector (or with ``all``) a gate applies to every config; a delta gate
(``metric - baseline``) applies to every steered config and cannot select the baseline
itself. ``>=`` and ``>`` are decided on the lower confidence bound, ``<=`` and ``<`` on the
upper one. An expression is either a gate (passes when the data shows it) or a fail-if
(fails when the data shows it): :class:`CheckForm`.

The parser is a hand-written recursive descent over a small tokenizer: the grammar is a
single production with a handful of alternatives, so a grammar library would add a
dependency for no gain in clarity, and writing it by hand lets every error point at the
exact offending position with a message about what was expected there. It imports no
numpy, so option parsing can check expressions before a run starts.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pytest_steer.ifeval import INSTRUCTION_IDS, unknown_instruction_id
from pytest_steer.stats.metrics import FOLLOW_RATE_PREFIXES, METRIC_CHOICES, METRICS, follow_rate_name

if TYPE_CHECKING:
    from pytest_steer.stats.aggregate import ConfigAggregate
    from pytest_steer.stats.bootstrap import Interval

COMPARISON_OPS = (">=", ">", "<=", "<")


class GateSyntaxError(ValueError):
    """An invalid gate expression; the message points at the offending position."""

    def __init__(self, text: str, position: int, problem: str) -> None:
        self.text = text
        self.position = position
        self.problem = problem
        super().__init__(f"invalid gate: {problem}\n  {text}\n  {' ' * position}^")


@dataclass(frozen=True)
class Selector:
    """Which configs a gate applies to: ``default``, ``all``, ``name`` or ``alpha``."""

    kind: str
    value: str | float | None = None

    def matches(self, agg: ConfigAggregate, *, delta: bool) -> bool:
        return self.selects(agg.name, agg.alpha, baseline=agg.is_baseline, delta=delta)

    def selects(self, name: str, alpha: float | None, *, baseline: bool, delta: bool) -> bool:
        """Whether the config ``name`` (PASTA at ``alpha``; None for other methods and the baseline) is selected."""
        if delta and baseline:
            return False
        if self.kind == "name":
            return name == self.value
        if self.kind == "alpha":
            return alpha is not None and math.isclose(alpha, float(self.value))
        return True


@dataclass(frozen=True)
class Gate:
    """A parsed gate expression."""

    text: str
    selector: Selector
    metric: str
    delta: bool
    op: str
    threshold: float

    @property
    def lhs(self) -> str:
        return f"{self.metric} - baseline" if self.delta else self.metric

    @property
    def bound(self) -> str:
        """The CI bound that decides the gate."""
        return "ci_low" if self.op in (">=", ">") else "ci_high"

    def holds(self, observed: Interval) -> bool:
        value = observed.ci_low if self.bound == "ci_low" else observed.ci_high
        return {
            ">=": value >= self.threshold,
            ">": value > self.threshold,
            "<=": value <= self.threshold,
            "<": value < self.threshold,
        }[self.op]


class CheckForm(str, enum.Enum):
    """The two forms of a check; the value is its spelling in results.json and its option's name."""

    GATE = "gate"  # passes when the data shows its expression
    FAIL_IF = "fail_if"  # fails when the data shows its expression

    @property
    def label_prefix(self) -> str:
        """What precedes the expression where outcomes name the check."""
        return "" if self is CheckForm.GATE else "fail if "

    @property
    def rule(self) -> str:
        return "passes if shown" if self is CheckForm.GATE else "fails if shown"

    def passed(self, shown: bool) -> bool:
        """The verdict when the data shows the expression (``shown``) or not."""
        return shown if self is CheckForm.GATE else not shown


@dataclass(frozen=True)
class Check:
    """One gate or fail-if: its parsed expression and its form."""

    form: CheckForm
    gate: Gate

    @property
    def label(self) -> str:
        """How outcomes name it: the expression, prefixed ``fail if`` for a fail-if."""
        return self.form.label_prefix + self.gate.text

    @classmethod
    def from_label(cls, label: str, form: CheckForm) -> Check:
        """The check a saved result names by its label (results.json keeps the label and the form)."""
        return cls(form, parse_gate(label.removeprefix(form.label_prefix)))


def parse_checks(gates: Iterable[Gate | str], fail_ifs: Iterable[Gate | str]) -> list[Check]:
    """A run's checks: its gates, then its fail-ifs, each in the given order (text is parsed)."""
    return [
        Check(form, parse_gate(gate) if isinstance(gate, str) else gate)
        for form, expressions in ((CheckForm.GATE, gates), (CheckForm.FAIL_IF, fail_ifs))
        for gate in expressions
    ]


# ---------------------------------------------------------------------------- parsing


@dataclass(frozen=True)
class _Token:
    kind: str  # name, number, bracket, op, colon, equals, minus, plus, end
    text: str
    position: int


_NAME_START = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_")
_NAME_CHARS = _NAME_START | set("0123456789.")
_DIGITS = set("0123456789")
_PUNCTUATION = {":": "colon", "=": "equals", "-": "minus", "+": "plus"}


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    i = 0
    while i < len(text):
        c = text[i]
        if c.isspace():
            i += 1
        elif c in _NAME_START:
            end = i
            while end < len(text) and text[end] in _NAME_CHARS:
                end += 1
            tokens.append(_Token("name", text[i:end], i))
            i = end
        elif c in _DIGITS or (c == "." and text[i + 1 : i + 2] in _DIGITS):
            end = _scan_number(text, i)
            tokens.append(_Token("number", text[i:end], i))
            i = end
        elif c == "[":
            close = text.find("]", i + 1)
            if close < 0:
                raise GateSyntaxError(text, i, "unclosed '[': expected ']' after the instruction id")
            content = text[i + 1 : close].strip()
            if not content:
                raise GateSyntaxError(text, i + 1, "expected an instruction id inside '[...]'")
            tokens.append(_Token("bracket", content, i))
            i = close + 1
        elif c in "<>":
            op = c + "=" if text[i + 1 : i + 2] == "=" else c
            tokens.append(_Token("op", op, i))
            i += len(op)
        elif c in _PUNCTUATION:
            tokens.append(_Token(_PUNCTUATION[c], c, i))
            i += 1
        else:
            raise GateSyntaxError(text, i, f"unexpected character {c!r}")
    tokens.append(_Token("end", "", len(text)))
    return tokens


def _scan_number(text: str, start: int) -> int:
    """End of the decimal number starting at ``start`` (digits, fraction, exponent)."""
    end = start
    while end < len(text) and text[end] in _DIGITS:
        end += 1
    if end < len(text) and text[end] == ".":
        end += 1
        while end < len(text) and text[end] in _DIGITS:
            end += 1
    if end < len(text) and text[end] in "eE":
        exponent = end + 1
        if exponent < len(text) and text[exponent] in "+-":
            exponent += 1
        if exponent < len(text) and text[exponent] in _DIGITS:
            end = exponent
            while end < len(text) and text[end] in _DIGITS:
                end += 1
    return end


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.index = 0

    def peek(self, ahead: int = 0) -> _Token:
        return self.tokens[min(self.index + ahead, len(self.tokens) - 1)]

    def advance(self) -> _Token:
        token = self.peek()
        self.index += 1
        return token

    def fail(self, token: _Token, problem: str) -> GateSyntaxError:
        return GateSyntaxError(self.text, token.position, problem)

    def gate(self) -> Gate:
        selector_token = self.peek()
        selector = self.selector()
        metric = self.metric()
        delta = self.baseline_suffix()
        if delta and selector.kind == "name" and selector.value == "baseline":
            raise self.fail(
                selector_token,
                "a delta gate compares steered configs with the baseline; it cannot select 'baseline'",
            )
        op = self.op()
        threshold = self.number()
        if self.peek().kind != "end":
            raise self.fail(self.peek(), "unexpected text after the threshold; a gate ends with its number")
        return Gate(self.text.strip(), selector, metric, delta, op, threshold)

    def selector(self) -> Selector:
        first, second = self.peek(), self.peek(1)
        if first.kind == "name" and first.text == "alpha" and second.kind == "equals":
            self.advance()
            self.advance()
            alpha = self.number()
            self.expect_colon()
            return Selector("alpha", alpha)
        if first.kind == "name" and second.kind == "colon":
            self.advance()
            self.advance()
            return Selector("all") if first.text == "all" else Selector("name", first.text)
        return Selector("default")

    def expect_colon(self) -> None:
        if self.peek().kind != "colon":
            raise self.fail(self.peek(), "expected ':' after the selector")
        self.advance()

    def metric(self) -> str:
        token = self.peek()
        if token.kind != "name":
            raise self.fail(token, f"expected a metric name ({METRIC_CHOICES})")
        self.advance()
        if token.text in FOLLOW_RATE_PREFIXES:
            bracket = self.peek()
            if bracket.kind != "bracket":
                raise self.fail(bracket, f"expected '[<instruction id>]' after {token.text!r}")
            self.advance()
            if bracket.text not in INSTRUCTION_IDS:
                raise self.fail(bracket, unknown_instruction_id(bracket.text, INSTRUCTION_IDS))
            return follow_rate_name(bracket.text, loose=token.text == "loose_follow_rate")
        if token.text in METRICS:
            return token.text
        if self.peek().kind == "name":
            raise self.fail(self.peek(), f"expected ':' after the selector {token.text!r}")
        raise self.fail(token, f"unknown metric {token.text!r}; expected one of {METRIC_CHOICES}")

    def baseline_suffix(self) -> bool:
        if self.peek().kind != "minus":
            return False
        self.advance()
        token = self.peek()
        if token.kind != "name" or token.text != "baseline":
            raise self.fail(token, "expected 'baseline' after '-' (a delta gate reads 'metric - baseline')")
        self.advance()
        return True

    def op(self) -> str:
        token = self.peek()
        if token.kind != "op":
            raise self.fail(token, f"expected a comparison operator ({', '.join(COMPARISON_OPS)})")
        self.advance()
        return token.text

    def number(self) -> float:
        sign = 1.0
        if self.peek().kind in ("minus", "plus"):
            sign = -1.0 if self.advance().kind == "minus" else 1.0
        token = self.peek()
        if token.kind != "number":
            raise self.fail(token, "expected a number")
        self.advance()
        return sign * float(token.text)


def parse_gate(text: str) -> Gate:
    """Parse one gate expression; raises :class:`GateSyntaxError` pointing at the error."""
    return _Parser(text).gate()
