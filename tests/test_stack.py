"""The start-up check that steering works on the installed torch and transformers."""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from pytest_steer.steering.pasta.stack import TESTED_TRANSFORMERS, IncompatibleStackError, check_steering_stack

REPO = Path(__file__).resolve().parents[1]
SUITE = str(REPO / "suites" / "ifeval")

# A stack on which the bias never reaches attention: what a renamed dispatch would look like.
BROKEN_STACK_PLUGIN = """
from pytest_steer.steering.pasta.attention import PromptKeyBias

def _ignore_bias(self, heads, query, key, mask):
    return mask

PromptKeyBias.steered_mask = _ignore_bias
"""


@pytest.fixture(autouse=True)
def fresh_check():
    check_steering_stack.cache_clear()
    yield
    check_steering_stack.cache_clear()


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_the_installed_stack_passes(attn: str) -> None:
    check_steering_stack(attn)


def test_a_bias_that_never_reaches_attention_is_refused_in_one_message(monkeypatch) -> None:
    from pytest_steer.steering.pasta.attention import PromptKeyBias

    monkeypatch.setattr(PromptKeyBias, "steered_mask", lambda self, heads, query, key, mask: mask)
    with pytest.raises(IncompatibleStackError) as failure:
        check_steering_stack("eager")
    message = str(failure.value)
    assert f"transformers {metadata.version('transformers')}" in message
    assert f"tested with transformers {TESTED_TRANSFORMERS[0]} to {TESTED_TRANSFORMERS[1]}" in message
    assert f"pip install 'transformers=={TESTED_TRANSFORMERS[1]}'" in message
    assert "did not reach attention" in message


def test_a_decode_that_loses_the_bias_is_refused(monkeypatch) -> None:
    from pytest_steer.steering.pasta.attention import PromptKeyBias

    original = PromptKeyBias.steered_mask

    def prefill_only(self, heads, query, key, mask):
        return original(self, heads, query, key, mask) if query.shape[2] > 1 else mask

    monkeypatch.setattr(PromptKeyBias, "steered_mask", prefill_only)
    with pytest.raises(IncompatibleStackError, match="token 2 of a KV-cache decode differs"):
        check_steering_stack("sdpa")


def test_a_crash_inside_attention_is_reported_as_the_incompatibility(monkeypatch) -> None:
    from pytest_steer.steering.pasta.attention import PromptKeyBias

    def crash(self, *args):
        raise TypeError("unexpected keyword 'cache'")

    monkeypatch.setattr(PromptKeyBias, "steered_mask", crash)
    with pytest.raises(IncompatibleStackError, match="raised TypeError: unexpected keyword 'cache'"):
        check_steering_stack("eager")


def test_the_check_leaves_the_global_random_state_alone() -> None:
    import torch

    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    check_steering_stack("eager")
    assert torch.equal(torch.rand(3), expected)


def test_a_broken_stack_stops_the_run_before_any_generation(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(broken_stack=BROKEN_STACK_PLUGIN)
    result = pytester.runpytest_subprocess(
        SUITE,
        "-p",
        "broken_stack",
        "-p",
        "no:cacheprovider",
        "--rootdir",
        str(REPO),
        "--steer-alpha",
        "10",
        "--steer-limit",
        "2",
        "--steer-max-new-tokens",
        "4",
        "--steer-no-cache",
    )
    output = result.stdout.str()
    assert result.ret == 2, output  # an error during collection: nothing ran
    assert output.count("steering does not work with the installed stack") == 1, output
    assert "[steer]" not in output  # no model was loaded, no batch generated
    result.stdout.fnmatch_lines(["*1 error*"])


def test_the_tested_range_matches_the_declared_range_and_the_pinned_sets() -> None:
    pyproject = (REPO / "pyproject.toml").read_text()
    declared = re.search(r'"transformers>=([0-9.]+),<([0-9.]+)"', pyproject)
    assert declared is not None
    lowest = (REPO / "constraints-lowest.txt").read_text()
    tested = (REPO / "constraints.txt").read_text()
    assert TESTED_TRANSFORMERS[0].startswith(declared.group(1))
    assert f"transformers=={TESTED_TRANSFORMERS[0]}\n" in lowest
    assert f"transformers=={TESTED_TRANSFORMERS[1]}\n" in tested
    newest = Version(TESTED_TRANSFORMERS[1])
    assert Version(declared.group(2)) == Version(f"{newest.major}.{newest.minor + 1}")  # no untested minor release admitted


def test_the_lowest_set_pins_the_lowest_declared_release_of_every_dependency() -> None:
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pinned = {
        canonicalize_name(name): Version(version)
        for name, version in re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)$", (REPO / "constraints-lowest.txt").read_text(), re.MULTILINE)
    }
    unpinned = []
    for line in project["dependencies"] + project["optional-dependencies"]["test"]:
        requirement = Requirement(line)
        name = canonicalize_name(requirement.name)
        lowest = [Version(spec.version) for spec in requirement.specifier if spec.operator in (">=", "==")]
        if name == "torch" or not lowest:  # torch is installed apart (STEER_TORCH)
            continue
        if pinned.get(name) != max(lowest):
            unpinned.append(f"{requirement} (constraints-lowest.txt: {pinned.get(name)})")
    assert not unpinned, unpinned


def test_a_steered_batch_generated_after_all_is_checked_first(tiny_checkpoint: Path, monkeypatch) -> None:
    """The collection skips the check when every PASTA case is cached; the runner still checks before generating a
    batch that holds a PASTA row (the baseline's rows share it), and a batch without one needs no check."""
    from pytest_steer.plan.collection import plan_cases
    from pytest_steer.plan.options import SteerSettings
    from pytest_steer.run import runner as runner_module
    from pytest_steer.run.runner import RunnerUnavailable, runner_for

    def broken(attn_implementation: str = "eager") -> None:
        raise IncompatibleStackError("steering does not work with the installed stack (a test's broken stack)")

    monkeypatch.setattr(runner_module, "check_steering_stack", broken)
    settings = SteerSettings(model=str(tiny_checkpoint), alpha=(10.0,), limit=2, max_new_tokens=4)
    plan = plan_cases(settings)
    runner = runner_for(settings, plan)
    assert runner.needs_generation("pasta") and not runner.needs_generation("emphasis")
    baseline = next(case for case in plan.cases if case.config.method is None)
    with pytest.raises(RunnerUnavailable, match="a test's broken stack"):
        runner.record(baseline)
    baseline_only = runner_for(settings, plan_cases(SteerSettings(model=str(tiny_checkpoint), limit=2, max_new_tokens=4)))
    assert baseline_only.record(baseline).error is None  # the unsteered model needs no check
