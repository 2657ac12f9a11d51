"""The README documents every option, with its ini name."""

from __future__ import annotations

import re
from pathlib import Path

from pytest_steer.options import OPTIONS

REPO = Path(__file__).resolve().parents[1]


def test_every_option_is_in_the_readme_table() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    missing = [option.cli for option in OPTIONS if f"| `{option.cli}` | `{option.ini}` |" not in readme]
    assert not missing, f"README options table lacks {missing}"


def test_the_steering_method_example_runs(pytester, tiny_checkpoint: Path) -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    match = re.search(r"```python\n# conftest.py\n(.*?)```", readme, re.S)
    assert match, "README lost its conftest.py example"
    pytester.makeconftest(match.group(1))
    pytester.makepyfile(test_answers="def test_answers(steer_case):\n    pass\n")
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--steer-model", str(tiny_checkpoint), "--steer-limit", "2", "--steer-max-new-tokens", "4",
        "--steer-no-cache", "--steer-method", "remind:times=2", "-v",
    )
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(["*test_answers[[]s001-remind_times2-t0[]]*", "configs: baseline (unsteered); remind_times2 (remind: times 2)"])
