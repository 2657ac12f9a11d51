"""IFEval's verifiable-instruction checkers with strict and loose scoring.

>>> from pytest_steer.ifeval import evaluate
>>> result = evaluate(prompt, response, instruction_id_list, kwargs)
>>> result.strict, result.loose, result.follow_all_strict, result.follow_all_loose

Verdicts agree with google-research's reference implementation of IFEval
(``instruction_following_eval``); see :mod:`pytest_steer.ifeval.checkers` for
the reference behaviours kept on purpose and :mod:`pytest_steer.ifeval.text`
for how tokenization and language detection work offline and deterministically.
Scoring files of existing responses: ``python -m pytest_steer.ifeval --help``.
"""

from __future__ import annotations

from pytest_steer.ifeval.arguments import InstructionError
from pytest_steer.ifeval.checkers import INSTRUCTION_IDS, unknown_instruction_id, validate_kwargs
from pytest_steer.ifeval.driver import Evaluation, describe_failure, evaluate

__all__ = [
    "INSTRUCTION_IDS",
    "Evaluation",
    "InstructionError",
    "describe_failure",
    "evaluate",
    "unknown_instruction_id",
    "validate_kwargs",
]
