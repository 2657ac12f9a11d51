"""Steering methods as configs: naming, the registry, the hook, and their place in a run."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from pytest_steer.plan.cases import SteeringConfig, case_id, may_name_a_case, steering_configs
from pytest_steer.plan.options import SteerSettings
from pytest_steer.steering import SteeringMethod
from pytest_steer.steering.registry import method_registry

SHOUT_CONFTEST = """
from pytest_steer.steering import PreparedPrompt, SteeringMethod


class Shout(SteeringMethod):
    name = "shout"

    def __init__(self, times: int = 1) -> None:
        self.times = times

    def params(self):
        return {"times": self.times}

    def prepare(self, prompt, highlights):
        return PreparedPrompt(prompt.upper() + "!" * self.times)


def pytest_steer_methods():
    return [Shout]
"""


def test_configs_are_named_after_their_method_and_parameters() -> None:
    configs = steering_configs([20.0, 2.5], [("emphasis", {}), ("shout", {"times": 3})], heads="8-23")
    assert [c.name for c in configs] == ["baseline", "pasta_alpha2.5", "pasta_alpha20", "emphasis", "shout_times3"]
    assert configs[1].to_dict() == {
        "name": "pasta_alpha2.5",
        "method": "pasta",
        "params": {"alpha": 2.5, "heads": "8-23", "scale_position": "include"},
    }
    assert [c.alpha for c in configs] == [None, 2.5, 20.0, None, None]
    assert not configs[0].steered and all(c.steered for c in configs[1:])


def test_a_file_parameter_names_its_config_by_the_files_stem_and_a_digest_of_its_path() -> None:
    from pytest_steer.plan.collection import run_configs
    from pytest_steer.plan.method_spec import parse_method

    deep = "/home/me/runs/2024-06-01/llama-3-8b/layer-15/direction.safetensors"
    other = "/home/me/runs/2024-07-01/llama-3-8b/layer-15/direction.safetensors"
    settings = SteerSettings(
        method=(
            parse_method(f"actadd:layer=15,coeff=0.5,vector={deep},{other}"),
            parse_method("actadd:layer=1,coeff=1,pairs=my-pairs.jsonl"),
        )
    )
    configs = run_configs(settings, method_registry())
    names = [config.name for config in configs[1:]]
    assert [re.sub(r"_[0-9a-f]{6}$", "_<digest>", name) for name in names] == [
        "actadd_layer15_coeff0.5_vectordirection_<digest>",
        "actadd_layer15_coeff0.5_vectordirection_<digest>",
        "actadd_layer1_coeff1_pairsmy_pairs_<digest>",
    ]
    assert names[0] != names[1]  # one stem, two paths
    assert [config.to_dict()["params"].get("vector") for config in configs[1:]] == [deep, other, None]
    assert json.loads(json.dumps(configs[1].to_dict()))["params"]["vector"] == deep
    assert run_configs(settings, method_registry())[1].name == names[0]  # the same on every worker and every run


def test_a_config_asked_for_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="emphasis are asked for twice"):
        steering_configs([], [("emphasis", {}), ("emphasis", {})])


def test_a_node_id_that_may_name_a_case_is_told_without_a_plan() -> None:
    config = SteeringConfig.of("pasta", {"alpha": 1e-5}, named_by=["alpha"])
    assert "-" not in config.name
    case = case_id("key-with-dashes-7", config.name, 3)
    assert may_name_a_case(f"suite/test_x.py::test_y[{case}]")
    assert may_name_a_case(f"suite/test_x.py::test_y[1-{case}-x]")  # with other parameters, in any order
    assert not may_name_a_case("suite/test_x.py::test_y[key-with-dashes-7]")
    assert not may_name_a_case("suite/test_x.py::test_y[a-t3x]")
    assert not may_name_a_case("suite/test_x.py::test_y")


def test_the_registry_holds_the_built_in_methods_and_refuses_bad_ones() -> None:
    assert sorted(method_registry()) == ["actadd", "emphasis", "pasta"]

    class Nameless(SteeringMethod):
        pass

    class Clash(SteeringMethod):
        name = "pasta"

    with pytest.raises(ValueError, match="must start with a letter"):
        method_registry([[Nameless]])
    with pytest.raises(ValueError, match="two steering methods are named 'pasta'"):
        method_registry([[Clash]])

    class Lazy(SteeringMethod):
        name = "actadd"

    with pytest.raises(ValueError, match="two steering methods are named 'actadd': ActAdd and Lazy"):
        method_registry([[Lazy]])  # a built-in not imported yet clashes all the same
    with pytest.raises(TypeError, match="return SteeringMethod subclasses"):
        method_registry([[object]])


def test_a_built_in_method_is_imported_when_a_run_names_it() -> None:
    """PASTA's class describes it without torch; ActAdd's module, which loads torch, waits until a run names actadd."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from pytest_steer.steering.registry import method_registry\n"
        "methods = method_registry()\n"
        "assert 'actadd' in methods and 'pytest_steer.steering.actadd.method' not in sys.modules\n"
        "pasta = methods['pasta'].create({'alpha': 10.0}, {'model_type': 'llama', 'num_hidden_layers': 4})\n"
        "assert pasta.params()['alpha'] == 10.0 and 'torch' not in sys.modules, sorted(sys.modules)\n"
        "assert methods['actadd'].name == 'actadd' and 'torch' in sys.modules\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_an_unknown_method_fails_collection_naming_the_known_ones() -> None:
    from pytest_steer.plan.collection import run_configs

    with pytest.raises(ValueError, match="'vector' is not a known steering method; known: actadd, emphasis, pasta"):
        run_configs(SteerSettings(method=(("vector", ()),)), method_registry())


def test_a_method_registered_in_a_conftest_runs_beside_emphasis(pytester: pytest.Pytester, tiny_checkpoint: Path) -> None:
    pytester.makeconftest(SHOUT_CONFTEST)
    pytester.makepyfile(test_answers="def test_answers(steer_case):\n    pass\n")
    out = pytester.path / "results.json"
    result = pytester.runpytest_subprocess(
        "-p",
        "no:cacheprovider",
        "--steer-model",
        str(tiny_checkpoint),
        "--steer-limit",
        "2",
        "--steer-max-new-tokens",
        "4",
        "--steer-no-cache",
        "--steer-method",
        "shout:times=2",
        "--steer-method",
        "emphasis",
        "--steer-json",
        str(out),
        "-v",
    )
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(["*test_answers[[]s001-shout_times2-t0[]]*", "*test_answers[[]s002-emphasis-t0[]]*"])
    result.stdout.fnmatch_lines(["configs: baseline (unsteered); shout_times2 (shout: times 2); emphasis (emphasis)"])
    data = json.loads(out.read_text())
    assert [(c["name"], c["method"]) for c in data["configs"]] == [("baseline", None), ("emphasis", "emphasis"), ("shout_times2", "shout")]
    responses = {(case["key"], case["config"]): case["response"] for case in data["cases"]}
    assert responses[("s001", "shout_times2")] != responses[("s001", "baseline")]  # the shouted prompt reached the model


def test_strict_mode_fails_a_missed_case_in_any_test_that_requests_it(pytester: pytest.Pytester, tiny_checkpoint: Path) -> None:
    pytester.makepyfile(test_mine="def test_mine(steer_case):\n    pass\n")
    args = ["--steer-model", str(tiny_checkpoint), "--steer-limit", "3", "--steer-max-new-tokens", "4", "--steer-no-cache"]
    result = pytester.runpytest_subprocess("test_mine.py", "-p", "no:cacheprovider", *args, "--steer-case-mode", "strict")
    outcomes = result.parseoutcomes()
    assert outcomes.get("failed", 0) >= 1, result.stdout.str()  # a random 2-layer model misses instructions
    result.stdout.fnmatch_lines(["*instruction(s) not followed (strict)*"])
    recorded = pytester.runpytest_subprocess("test_mine.py", "-p", "no:cacheprovider", *args)
    assert recorded.ret == 0 and recorded.parseoutcomes().get("missed", 0) == outcomes["failed"]


def test_a_highlight_missing_from_its_prompt_warns_once_on_its_own_case(pytester: pytest.Pytester, tiny_checkpoint: Path) -> None:
    rows = [
        {
            "key": "fine",
            "prompt": "Write a poem. Do not use any commas.",
            "instructions": ["Do not use any commas."],
            "instruction_id_list": ["punctuation:no_comma"],
            "kwargs": [{}],
        },
        {
            "key": "odd",
            "prompt": "Write a poem without commas.",
            "instructions": ["Do not use any commas."],
            "instruction_id_list": ["punctuation:no_comma"],
            "kwargs": [{}],
        },
    ]
    data = pytester.path / "rows.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    pytester.makepyfile(test_answers="def test_answers(steer_case):\n    pass\n")
    result = pytester.runpytest_subprocess(
        "-p",
        "no:cacheprovider",
        "--steer-model",
        str(tiny_checkpoint),
        "--steer-dataset",
        str(data),
        "--steer-alpha",
        "10",
        "--steer-max-new-tokens",
        "2",
        "--steer-no-cache",
        "-W",
        "always::pytest_steer.steering.SteeringWarning",
    )
    assert result.ret == 0, result.stdout.str()
    output = result.stdout.str()
    assert output.count("odd: highlighted text not found in the prompt, so not emphasized: 'Do not use any commas.'") == 1
    result.stdout.fnmatch_lines(["*test_answers[[]odd-pasta_alpha10-t0[]]*"])
    assert "fine: highlighted" not in output
