"""pytest-steer: evaluate LLM steering (PASTA) as a pytest suite.

The public helpers are imported lazily so that loading the plugin stays cheap.
"""

from __future__ import annotations

from typing import Any

__all__ = ["SteerCase", "assert_follows_instructions", "assert_quality_at_least"]

_LAZY = {
    "SteerCase": "pytest_steer.steer_case",
    "assert_follows_instructions": "pytest_steer.assertions",
    "assert_quality_at_least": "pytest_steer.assertions",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'pytest_steer' has no attribute {name!r}")
