"""IFEval instruction following under steering.

Each case is one prompt × config (the unsteered baseline, PASTA at one alpha, or another
steering method) × trial. In the default ``record`` mode a case records its verdicts and
passes (a missed instruction shows as MISSED); aggregates and gates decide the run. In
``strict`` mode (``--steer-case-mode strict``) a missed instruction fails the case.
"""

from pytest_steer import SteerCase


def test_follows_instructions(steer_case: SteerCase) -> None:
    """The plugin generates, checks and records the case; this test only asks for it."""
