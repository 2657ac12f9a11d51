"""IFEval instruction following under PASTA steering.

Each case is one prompt × config (unsteered baseline or PASTA at one alpha) × trial.
In the default ``record`` mode a case records its verdicts and passes (a missed
instruction shows as MISSED); aggregates and gates decide the run. In ``strict`` mode
every case must follow every instruction.
"""

from pytest_steer import SteerCase, assert_follows_instructions


def test_follows_instructions(steer_case: SteerCase) -> None:
    if steer_case.mode == "strict":
        assert_follows_instructions(steer_case)
