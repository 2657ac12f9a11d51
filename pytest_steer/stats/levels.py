"""The run's error levels: its confidence, the one-sided error of each bound, the family corrections.

Light on purpose (no numpy): option parsing and the run's bookkeeping read it too.
"""

from __future__ import annotations

CONFIDENCE = 0.95  # the run's two-sided level: every interval it reports, and the family-wise error of its checks
CORRECTIONS = ("holm", "none")  # family-wise error control over a run's checks: Holm's step-down, or each check alone


def one_sided_error(confidence: float) -> float:
    """The error of each bound of a two-sided interval at ``confidence``: ``(1 - confidence) / 2``."""
    return (1.0 - confidence) / 2.0
