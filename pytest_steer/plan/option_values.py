"""What each option's text may be: the parsers behind :mod:`pytest_steer.plan.options`, and the values they know.

Each parser turns an option's text into its value or raises ValueError naming the problem
and the fix; the option table puts the option's name in front.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

from pytest_steer.ifeval import INSTRUCTION_IDS, unknown_instruction_id
from pytest_steer.stats.gate_language import parse_gate
from pytest_steer.stats.metrics import METRIC_CHOICES, is_metric_name
from pytest_steer.steering.pasta.heads import parse_heads
from pytest_steer.store.hub import looks_like_hub_id

CASE_MODES = ("record", "strict")
SCALE_POSITIONS = ("include", "exclude", "generation")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")  # torch.compile's modes
QUALITY_FLUENCY = "fluency"
QUALITY_NONE = "none"
REWARD_PREFIX = "reward:"
REFERENCE_REWARD_MODEL = "OpenAssistant/reward-model-deberta-v3-large-v2"
REWARD_TRANSFORMS = ("identity", "sigmoid")
LABELLED_REWARD_TRANSFORMS = ("softmax", "log_softmax")


def whole_number(text: str, expected: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a whole number; expected {expected}") from None


def finite_number(text: str, expected: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a number; expected {expected}") from None
    if not math.isfinite(value):
        raise ValueError(f"{text!r} is not a finite number; expected {expected}")
    return value


def positive_int(text: str) -> int:
    expected = "a positive integer (1, 2, 3, ...)"
    value = whole_number(text, expected)
    if value < 1:
        raise ValueError(f"{text!r} must be a positive integer; expected {expected}")
    return value


SEED_MAX = 2**32 - 1  # the range every seed consumer accepts (numpy's bootstrap refuses negative seeds)


def seed(text: str) -> int:
    expected = f"an integer seed from 0 to {SEED_MAX}, e.g. 0 or 1234"
    value = whole_number(text, expected)
    if not 0 <= value <= SEED_MAX:
        raise ValueError(f"{text!r} is out of range; expected {expected}")
    return value


AUTO = "auto"  # a strength the run chooses (--steer-alpha auto, --steer-method NAME:PARAM=auto)


def alpha(text: str) -> float | str:
    """A PASTA strength, or ``auto``: chosen from --steer-grid."""
    if text.strip() == AUTO:
        return AUTO
    return _positive_number(text, "alpha", "a positive number (alpha > 1 steers towards the highlighted text)")


def strength(text: str) -> float:
    """A value of --steer-grid (PASTA's alpha, or another method's strength)."""
    return _positive_number(text, "strength", "a positive number, e.g. 10")


def _positive_number(text: str, what: str, expected: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{what} {text!r} is not a number; expected {expected}") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{what} {text!r} must be a positive number; expected {expected}")
    return value


TOP_P_MIN = 1e-6


def top_p(text: str) -> float:
    expected = f"a probability in [{TOP_P_MIN:g}, 1], e.g. 0.9"
    value = finite_number(text, expected)
    if not 0 < value <= 1:
        raise ValueError(f"{text!r} must be in (0, 1]; expected {expected}")
    if value < TOP_P_MIN:  # keeps only the most likely token, and rounds to 0 in float32 scores below ~1e-45
        raise ValueError(f"{text!r} is below {TOP_P_MIN:g} and would keep only the most likely token; use --steer-greedy for that")
    return value


def share(text: str) -> float:
    expected = "a fraction between 0 and 1, e.g. 0.5"
    value = finite_number(text, expected)
    if not 0 < value < 1:
        raise ValueError(f"{text!r} is not between 0 and 1 (exclusive); expected {expected}")
    return value


def positive_float(text: str) -> float:
    expected = "a positive number, e.g. 0.7"
    value = finite_number(text, expected)
    if not value > 0:
        raise ValueError(f"{text!r} must be a positive number; expected {expected}")
    return value


def path(text: str) -> Path:
    if not text.strip():
        raise ValueError("the path is empty; expected a file or directory path")
    return Path(text)


def heads(text: str) -> str:
    parse_heads(text)  # the syntax now; the layers once the model's depth is known
    return text


def choice(*choices: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in choices:
            raise ValueError(f"{text!r} is not one of {', '.join(choices)}")
        return text

    return parse


def csv(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def instruction_ids(text: str) -> tuple[str, ...]:
    ids = csv(text)
    for instruction_id in ids:
        if instruction_id not in INSTRUCTION_IDS:
            raise ValueError(unknown_instruction_id(instruction_id, INSTRUCTION_IDS))
    return ids


def metric(text: str) -> str:
    if not is_metric_name(text.strip()):
        raise ValueError(f"unknown metric {text!r}; expected one of {METRIC_CHOICES}")
    return text.strip()


def gate(text: str) -> str:
    parse_gate(text)  # a syntax error stops pytest here, with a caret at its position
    return text


def error_budget(text: str) -> float:
    expected = "a count (0, 1, 2, ...) or a fraction of the cases below 1, e.g. 0.05"
    value = finite_number(text, expected)
    if value < 0:
        raise ValueError(f"{text!r} is negative; expected {expected}")
    return value


def compare_fail(text: str) -> str:
    from pytest_steer.stats.comparison import parse_compare_fail  # why: imports numpy; this module loads with the plugin

    parse_compare_fail(text)
    return text


def positive_int_or_auto(text: str) -> int | None:
    """A positive integer, or ``auto`` (None): the run sizes it."""
    if text == "auto":
        return None
    value = whole_number(text, "auto or a positive integer")
    if value < 1:
        raise ValueError(f"{text!r} must be auto or a positive integer")
    return value


def quality(text: str) -> str:
    """``fluency``, ``none`` or ``reward:<model id or path>`` (the path must exist)."""
    if text in (QUALITY_FLUENCY, QUALITY_NONE):
        return text
    if not text.startswith(REWARD_PREFIX):
        raise ValueError(
            f"{text!r} is not a quality scorer; use {QUALITY_FLUENCY}, {QUALITY_NONE} or "
            f"{REWARD_PREFIX}<model id or path> (e.g. {REWARD_PREFIX}{REFERENCE_REWARD_MODEL})"
        )
    name = text.removeprefix(REWARD_PREFIX).strip()
    if not name:
        raise ValueError(f"{text!r} names no reward model; use {REWARD_PREFIX}<model id or path>")
    if not Path(name).expanduser().exists() and not looks_like_hub_id(name):
        raise ValueError(f"reward model {name!r} is neither an existing local path nor a Hugging Face model id (org/name); check the path")
    return REWARD_PREFIX + name


def reward_model_alternatives() -> str:
    """What to use instead of a reward model that cannot be downloaded."""
    return (
        f"a local reward model directory (--steer-quality {REWARD_PREFIX}/path/to/model), "
        f"--steer-quality {QUALITY_FLUENCY} (needs no other model), or a populated HF cache"
    )


def reward_transform(text: str) -> str:
    """``identity``, ``sigmoid``, or ``softmax:<label>`` / ``log_softmax:<label>``."""
    kind, colon, label = text.partition(":")
    if kind in REWARD_TRANSFORMS and not colon:
        return text
    if kind in LABELLED_REWARD_TRANSFORMS and label.strip():
        return f"{kind}:{label.strip()}"
    raise ValueError(
        f"{text!r} is not a reward transform; use identity or sigmoid (single-logit heads), or "
        "softmax:<label> / log_softmax:<label> with a label index or name of a multi-label head"
    )
