"""JUnit XML that CI tools parse: every steer property is a plain string or JSON, and the suite names model and versions."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from pytest_steer.report.junit import property_value, suite_properties

REPO = Path(__file__).resolve().parents[2]
SUITE = str(REPO / "suites" / "ifeval")
GATE = "follow_rate[keywords:existence] - baseline < 2"


def test_property_values_are_strings_or_json() -> None:
    assert property_value("plain text") == "plain text"
    assert property_value(True) == "true" and property_value(False) == "false"
    assert property_value(None) == "null"
    assert json.loads(property_value({"mean": 1 / 3, "ci_low": None})) == {"mean": 1 / 3, "ci_low": None}
    assert property_value([True, False]) == "[true,false]"


def test_suite_properties_skip_unknown_values() -> None:
    run = {"model": {"name": "m", "dtype": "float32"}, "versions": {"torch": "2.5.0", "nltk": None}, "shard": None}
    assert dict(suite_properties(run)) == {"steer.model": "m", "steer.dtype": "float32", "steer.version.torch": "2.5.0"}


def _is_json_or_plain(name: str, value: str) -> bool:
    """Not a Python repr: no ``None``/``True``/``False`` words, no single-quoted dicts or lists."""
    if value in ("None", "True", "False") or value.startswith(("{'", "['")):
        return False
    if value.startswith(("{", "[")):
        json.loads(value)  # raises if it only looks like JSON
    return True


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["plain", "xdist"])
def test_junit_properties_parse(pytester: pytest.Pytester, tiny_checkpoint: Path, tmp_path: Path, workers: list[str]) -> None:
    if workers:
        pytest.importorskip("xdist")
    junit = tmp_path / "junit.xml"
    result = pytester.runpytest_subprocess(
        SUITE, "--rootdir", str(REPO), "-o", f"cache_dir={tmp_path / 'cache'}", *workers,
        "--steer-model", str(tiny_checkpoint), "--steer-limit", "2", "--steer-max-new-tokens", "4", "--steer-alpha", "10",
        "--steer-dtype", "float32", "--steer-batch-size", "3",  # two batches of the configs' six rows: one per worker
        "--steer-method", "emphasis", "--steer-gate", GATE, "--steer-min-prompts", "2", "--junitxml", str(junit), "-o", "junit_family=xunit1", "-rA",
    )  # fmt: skip
    assert result.ret in (0, 1), result.stdout.str()
    gate_lines = [line for line in result.stdout.lines if "keywords:existence]" in line and "steer-gates::" in line]
    assert gate_lines and all("::gate[follow_rate[keywords:existence] - baseline < 2]" in line for line in gate_lines)
    assert not any("< 2]]" in line for line in result.stdout.lines)  # no stray bracket
    suite = ET.parse(junit).getroot().find("testsuite")
    suite_props = {p.get("name"): p.get("value") for p in suite.find("properties")}
    assert suite_props["steer.model"] == str(tiny_checkpoint)
    assert suite_props["steer.dtype"] == "float32" and suite_props["steer.devices"] == "cpu"
    assert suite_props["steer.version.torch"] and suite_props["steer.version.transformers"]
    cases = {(case.get("classname"), case.get("name")): case for case in suite.iter("testcase")}
    gate_cases = [case for (_, name), case in cases.items() if "keywords:existence" in name]
    assert len(gate_cases) == 2  # pasta_alpha10 and emphasis
    assert {case.get("classname") for case in gate_cases} == {"steer-gates.pasta_alpha10", "steer-gates.emphasis"}
    values: dict[str, list[str]] = {}
    for case in cases.values():
        for prop in case.iter("property"):
            values.setdefault(prop.get("name"), []).append(prop.get("value"))
            assert _is_json_or_plain(prop.get("name"), prop.get("value")), (prop.get("name"), prop.get("value"))
    assert set(values["steer.follow_all_strict"]) <= {"true", "false"}
    assert all(isinstance(json.loads(v), list) for v in values["steer.strict"])
    gate = {p.get("name"): p.get("value") for p in gate_cases[0].iter("property")}
    assert set(json.loads(gate["steer.observed"])) == {"mean", "ci_low", "ci_high", "n_prompts"}
    assert gate["steer.passed"] in ("true", "false") and gate["steer.gate"] == GATE

    report = tmp_path / "cache" / "d" / "steer-report"
    run = json.loads((report / "results.json").read_text())["run"]
    assert run["shard"] is None and run["dataset"]["digest"].startswith("sha256:")
    assert run["provenance"]["devices"] == ["cpu"] and run["provenance"]["duration_s"] > 0
    assert run["provenance"]["command"][0] == "pytest" and SUITE in run["provenance"]["command"]
    cases = [json.loads(line) for line in (report / "cases.jsonl").read_text().splitlines()]
    assert all(case["device"] == "cpu" and case["error"] is None for case in cases)
    assert {case["worker"] for case in cases} == ({"gw0", "gw1"} if workers else {None})
    for case in cases:
        if case["config"] == "emphasis":  # emphasis rewrites the prompt: the record shows what was sent
            assert case["prepared_prompt"] != case["prompt"] and case["highlights"]
        else:
            assert case["prepared_prompt"] == case["prompt"]
