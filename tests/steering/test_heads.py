from __future__ import annotations

import os
import subprocess
import sys

import pytest

from pytest_steer.steering import HeadConfigError, default_head_layers, parse_heads
from pytest_steer.steering.pasta.heads import normalize_head_config, resolve_heads


def test_default_layers_match_the_reference_study_for_28_layers() -> None:
    assert default_head_layers(28) == list(range(8, 24))


@pytest.mark.parametrize(
    ("num_layers", "expected"),
    [(1, [0]), (2, [1]), (4, [1, 2]), (7, [2, 3, 4, 5]), (30, list(range(9, 26))), (32, list(range(9, 27)))],
)
def test_default_layers_are_the_middle_of_any_depth(num_layers: int, expected: list[int]) -> None:
    assert default_head_layers(num_layers) == expected


def test_default_layers_reject_an_empty_model() -> None:
    with pytest.raises(HeadConfigError):
        default_head_layers(0)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("8,9,10", [8, 9, 10]),
        ("8-23", list(range(8, 24))),
        ("0-3,7", [0, 1, 2, 3, 7]),
        (" 7 , 0 - 2 ", [0, 1, 2, 7]),
        ("5,5", [5]),
        ('{"8": [0, 1], "9": [2]}', {8: [0, 1], 9: [2]}),
        ('{"3": [2, 0, 2]}', {3: [0, 2]}),
    ],
)
def test_parse_heads_accepts_lists_ranges_and_json(text: str, expected: object) -> None:
    assert parse_heads(text) == expected


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "empty"),
        ("8,x", "'x' at position 2"),
        ("8,,9", "'' at position 2"),
        ("23-8", "runs backwards"),
        ("-3", "'-3' at position 0"),
        ('{"8": [0, 1}', "not valid JSON"),
        ('{"a": [0]}', "key 'a'"),
        ('{"8": []}', "non-empty list"),
        ('{"8": [true]}', "non-empty list"),
        ("[1, 2]", "is not a layer number"),
    ],
)
def test_parse_heads_names_the_problem(text: str, fragment: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_heads(text)
    assert fragment in str(caught.value)


def test_parse_heads_checks_the_depth_when_given() -> None:
    assert parse_heads("0-3", num_layers=4) == [0, 1, 2, 3]
    with pytest.raises(HeadConfigError, match="layer 4, but the model has 4 layers"):
        parse_heads("2-4", num_layers=4)
    with pytest.raises(HeadConfigError, match="layer 9"):
        parse_heads('{"9": [0]}', num_layers=4)


def test_head_config_forms_normalize_to_the_same_selection() -> None:
    assert normalize_head_config(range(2, 4)) == {2: None, 3: None}
    assert normalize_head_config([3, 2, 3]) == {2: None, 3: None}
    assert normalize_head_config({"3": [1, 0], 2: (0,)}) == {2: (0,), 3: (0, 1)}


@pytest.mark.parametrize("config", [[], {}, "8-23", [-1], [1.5], {1: []}, {1: [-2]}, {1: "01"}, 7])
def test_malformed_head_configs_are_rejected(config: object) -> None:
    with pytest.raises(HeadConfigError):
        normalize_head_config(config)  # type: ignore[arg-type]


def test_resolve_expands_all_heads_and_checks_ranges() -> None:
    assert resolve_heads({1: None, 2: (3,)}, num_layers=4, num_heads=4) == {1: (0, 1, 2, 3), 2: (3,)}
    with pytest.raises(HeadConfigError, match=r"layer 4, but the model has 4 layers \(0-3\)"):
        resolve_heads({4: None}, num_layers=4, num_heads=4)
    with pytest.raises(HeadConfigError, match=r"head 4 of layer 1, but the model has 4 attention heads"):
        resolve_heads({1: (0, 4)}, num_layers=4, num_heads=4)


def test_head_helpers_do_not_import_torch() -> None:
    code = (
        "import sys; from pytest_steer.steering import parse_heads, default_head_layers, locate_spans, SteeringError; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)
