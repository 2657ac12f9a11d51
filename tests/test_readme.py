"""The README documents every option, with its ini name."""

from __future__ import annotations

from pathlib import Path

from pytest_steer.options import OPTIONS

REPO = Path(__file__).resolve().parents[1]


def test_every_option_is_in_the_readme_table() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    missing = [option.cli for option in OPTIONS if f"| `{option.cli}` | `{option.ini}` |" not in readme]
    assert not missing, f"README options table lacks {missing}"
