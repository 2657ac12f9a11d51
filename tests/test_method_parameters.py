"""Method parameters: declared by __init__ or a parameters table, checked and converted before anything runs."""

from __future__ import annotations

from typing import Any, Literal

import pytest

from pytest_steer.plan.collection import run_configs
from pytest_steer.plan.options import SteerSettings
from pytest_steer.steering import Emphasis, Parameter, SteeringMethod
from pytest_steer.steering.parameters import bind_parameters, declared_parameters
from pytest_steer.steering.registry import bind_method_parameters, method_registry


class Remind(SteeringMethod):
    name = "remind"

    def __init__(
        self,
        times: int = 1,
        ratio: float = 0.5,
        loud: bool = False,
        words: list[str] | None = None,
        mode: Literal["end", "start"] = "end",
        note: str = "Remember:",
    ) -> None:
        self.times = times


class Vector(SteeringMethod):
    """A method whose create takes other parameters than its __init__: it lists them."""

    name = "vector"
    parameters = (Parameter("layer", int), Parameter("scale", float, 1.0))

    def __init__(self, vector: list[float]) -> None:
        self.vector = vector

    @classmethod
    def create(cls, params: Any, model_config: Any) -> Vector:
        return cls([float(params.get("scale", 1.0))] * (params["layer"] + 1))


class Loose(SteeringMethod):
    name = "loose"

    def __init__(self, strength: float = 1.0, **extra: Any) -> None:
        self.extra = extra


def test_parameters_are_read_off_init_with_their_types_and_defaults() -> None:
    declared, open_ended = declared_parameters(Remind)
    assert not open_ended
    assert [p.describe() for p in declared.values()] == [
        "times (int, default 1)",
        "ratio (float, default 0.5)",
        "loud (bool, default False)",
        "words (list[str] or None, default None)",
        "mode (one of 'end', 'start', default 'end')",
        "note (str, default 'Remember:')",
    ]
    assert declared_parameters(SteeringMethod) == ({}, False)
    assert declared_parameters(Loose)[1] is True


def test_text_values_are_converted_to_the_declared_types() -> None:
    given = {"times": "3", "ratio": "1", "loud": "yes", "words": '["a", "b"]', "mode": "start", "note": "Mind:"}
    bound = bind_parameters(Remind, "remind", given)
    assert bound == {"times": 3, "ratio": 1.0, "loud": True, "words": ["a", "b"], "mode": "start", "note": "Mind:"}
    assert type(bound["ratio"]) is float
    assert bind_parameters(Remind, "remind", {"words": "none", "note": '" spaced, "'}) == {"words": None, "note": " spaced, "}
    assert bind_parameters(Remind, "remind", {}) == {}  # defaults stay the method's own
    assert bind_parameters(Remind, "remind", bound) == bound  # converted values convert to themselves


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"times": "abc"}, "remind parameter 'times': 'abc' is not an int; expected a whole number such as 2"),
        ({"times": "1.5"}, "remind parameter 'times': '1.5' is not an int"),
        ({"ratio": "nan"}, "remind parameter 'ratio': 'nan' is not finite; it must be a finite number such as 0.5"),
        ({"ratio": "-inf"}, "remind parameter 'ratio': '-inf' is not finite; it must be a finite number such as 0.5"),
        ({"ratio": "lots"}, "remind parameter 'ratio': 'lots' is not a float; expected a finite number such as 0.5"),
        ({"loud": "maybe"}, "remind parameter 'loud': 'maybe' is not a bool; expected true or false"),
        ({"words": "3"}, "remind parameter 'words': '3' is not list[str] or None"),
        ({"mode": "middle"}, "remind parameter 'mode': 'middle' is not one of 'end', 'start'"),
    ],
)
def test_values_that_do_not_convert_name_the_parameter_and_the_expected_type(given: dict, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        bind_parameters(Remind, "remind", given)
    assert str(caught.value).startswith(message)


def test_unknown_and_missing_parameters_name_the_method_and_what_it_takes() -> None:
    with pytest.raises(ValueError) as caught:
        bind_method_parameters(Emphasis, "emphasis", [("foo", "1")])
    assert str(caught.value) == "--steer-method emphasis:foo=1: emphasis takes no parameter 'foo'; it takes marker (str, default '**')"
    with pytest.raises(
        ValueError, match=r"^--steer-method vector:scale=2: vector needs the parameter 'layer'; it takes layer \(int, required\)"
    ):
        bind_method_parameters(Vector, "vector", [("scale", "2")])
    with pytest.raises(ValueError, match="^--steer-method vector:layer=1,vector=1: vector takes no parameter 'vector'"):
        bind_method_parameters(Vector, "vector", [("layer", "1"), ("vector", "1")])
    with pytest.raises(ValueError, match=r"^--steer-method shy:x=1: shy takes no parameter 'x'; it takes no parameters$"):

        class Shy(SteeringMethod):
            name = "shy"

        bind_method_parameters(Shy, "shy", [("x", "1")])


def test_a_parameters_table_wins_over_init_and_kwargs_accept_any_name() -> None:
    assert bind_parameters(Vector, "vector", {"layer": "2", "scale": "3"}) == {"layer": 2, "scale": 3.0}
    assert Vector.create({"layer": 2}, None).vector == [1.0, 1.0, 1.0]
    assert bind_parameters(Loose, "loose", {"strength": "2", "extra": '{"a": 1}', "tag": "blue"}) == {
        "strength": 2.0,
        "extra": {"a": 1},
        "tag": "blue",
    }


def test_the_built_in_methods_declare_their_parameters() -> None:
    from pytest_steer.steering import PASTA

    assert bind_parameters(PASTA, "pasta", {"alpha": "5", "heads": "0-3", "scale_position": "exclude"}) == {
        "alpha": 5.0,
        "heads": "0-3",
        "scale_position": "exclude",
    }
    with pytest.raises(ValueError, match="'alpha': 'strong' is not a float"):
        bind_parameters(PASTA, "pasta", {"alpha": "strong"})
    assert bind_parameters(Emphasis, "emphasis", {"marker": "__"}) == {"marker": "__"}


def test_run_configs_convert_values_before_naming_and_keying_configs() -> None:
    methods = method_registry([[Remind]])
    configs = run_configs(SteerSettings(method=(("remind", (("times", "2"), ("ratio", "0.25"))),)), methods)
    assert configs[-1].name == "remind_times2_ratio0.25"
    assert configs[-1].parameters == {"times": 2, "ratio": 0.25}
    with pytest.raises(ValueError, match=r"^--steer-method remind:times=abc: remind parameter 'times': 'abc' is not an int"):
        run_configs(SteerSettings(method=(("remind", (("times", "abc"),)),)), methods)


def test_the_registry_refuses_a_parameters_attribute_that_is_not_a_table() -> None:
    class Odd(SteeringMethod):
        name = "odd"

        def parameters(self) -> dict:  # type: ignore[override]
            return {}

    with pytest.raises(TypeError, match=r"Odd.parameters must be a tuple of pytest_steer.steering.Parameter"):
        method_registry([[Odd]])


def test_the_option_keeps_values_as_text_until_collection(pytester: pytest.Pytester) -> None:
    from pytest_steer.plan.options import settings_from_config

    settings = settings_from_config(pytester.parseconfig("--steer-method", "remind:times=2,note=[x]"))
    assert settings.method == (("remind", (("times", "2"), ("note", "[x]"))),)
