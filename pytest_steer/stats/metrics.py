"""The names of the metrics a run measures, and of its per-instruction follow rates.

Light on purpose (no numpy): the gate language and option parsing name metrics too.
"""

from __future__ import annotations

ACCURACY_METRICS = (
    "strict_prompt_accuracy",
    "strict_instruction_accuracy",
    "loose_prompt_accuracy",
    "loose_instruction_accuracy",
)
QUALITY_METRIC = "quality"
METRICS = (*ACCURACY_METRICS, QUALITY_METRIC)
FOLLOW_RATE_PREFIXES = {"follow_rate": "strict", "loose_follow_rate": "loose"}
METRIC_CHOICES = ", ".join((*METRICS, *(f"{p}[<instruction id>]" for p in FOLLOW_RATE_PREFIXES)))  # for messages


def follow_rate_name(instruction_id: str, *, loose: bool = False) -> str:
    """Metric name of one instruction id's follow rate, e.g. ``follow_rate[detectable_format:title]``."""
    return f"{'loose_follow_rate' if loose else 'follow_rate'}[{instruction_id}]"


def split_follow_rate(metric: str) -> tuple[str, str] | None:
    """``("strict" | "loose", instruction id)`` for a follow-rate metric name, else ``None``."""
    for prefix, side in FOLLOW_RATE_PREFIXES.items():
        if metric.startswith(prefix + "[") and metric.endswith("]"):
            instruction_id = metric[len(prefix) + 1 : -1]
            if instruction_id:
                return side, instruction_id
    return None


def is_metric_name(metric: str) -> bool:
    return metric in METRICS or split_follow_rate(metric) is not None
