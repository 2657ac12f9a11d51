"""Option parsing: every bad value is a usage error naming the option and what it expects."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

import pytest

from pytest_steer.plan.options import OPTIONS, Option, SteerSettings

README = Path(__file__).resolve().parents[1] / "README.md"
PYTHON_WORDING = ("invalid literal", "could not convert", "base 10")
BAD_VALUES = ("abc", "", " ", "-1", "0", "1.5", "nan", "inf", "1e999", "[", "{")


def _parsed_options() -> list[Option]:
    return [option for option in OPTIONS if not option.flag and option.parse is not str]


def test_every_setting_is_an_option() -> None:
    """An option's default is its SteerSettings field's: one field per option, in the same order."""
    assert [option.name for option in OPTIONS] == [f.name for f in fields(SteerSettings) if f.name != "rootdir"]


@pytest.mark.parametrize("option", OPTIONS, ids=lambda option: option.cli)
def test_the_readme_states_each_default(option: Option) -> None:
    """The README's default column: off for a flag, empty when unset, else a value that parses to the default."""
    row = re.search(rf"^\| `{re.escape(option.cli)}` \| `{option.ini}` \| ([^|]*) \|", README.read_text(encoding="utf-8"), re.M)
    assert row, f"README options table lacks {option.cli}"
    stated = row[1].strip()
    if option.flag:
        assert (stated, option.default) == ("off", False)
    elif option.default in (None, ()):
        assert stated == ""
    elif option.repeatable:
        assert tuple(option.parse(part) for part in stated.strip("`").split(",")) == option.default
    else:
        assert option.parse(stated.strip("`")) == option.default


@pytest.mark.parametrize("option", _parsed_options(), ids=lambda option: option.cli)
@pytest.mark.parametrize("value", BAD_VALUES)
def test_every_parser_words_its_own_errors(option: Option, value: str) -> None:
    try:
        option.parse(value)
    except ValueError as exc:
        message = str(exc)
        assert message, f"{option.cli} {value!r}: empty message"
        assert not any(wording in message for wording in PYTHON_WORDING), f"{option.cli} {value!r}: {message}"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("--steer-trials", "abc"),
            "--steer-trials (ini steer_trials): 'abc' is not a whole number; expected a positive integer (1, 2, 3, ...)",
        ),
        (
            ("--steer-trials", "0"),
            "--steer-trials (ini steer_trials): '0' must be a positive integer; expected a positive integer (1, 2, 3, ...)",
        ),
        (
            ("--steer-seed", "1.5"),
            "--steer-seed (ini steer_seed): '1.5' is not a whole number; expected an integer seed from 0 to 4294967295",
        ),
        (
            ("--steer-seed", "-1"),
            "--steer-seed (ini steer_seed): '-1' is out of range; expected an integer seed from 0 to 4294967295, e.g. 0",
        ),
        (("--steer-seed", "4294967296"), "--steer-seed (ini steer_seed): '4294967296' is out of range; expected an integer seed from 0 to"),
        (
            ("--steer-sample-seed", "-7"),
            "--steer-sample-seed (ini steer_sample_seed): '-7' is out of range; expected an integer seed from 0",
        ),
        (
            ("--steer-top-p", "1e-300"),
            "--steer-top-p (ini steer_top_p): '1e-300' is below 1e-06 and would keep only the most likely token; use --steer-greedy",
        ),
        (("--steer-top-p", "0"), "--steer-top-p (ini steer_top_p): '0' must be in (0, 1]; expected a probability in [1e-06, 1], e.g. 0.9"),
        (
            ("--steer-instruction-ids", "punctuation:no_comma,detectable_format:titel"),
            "--steer-instruction-ids (ini steer_instruction_ids): unknown instruction id 'detectable_format:titel'; "
            "did you mean detectable_format:title",
        ),
        (
            ("--steer-temperature", "warm"),
            "--steer-temperature (ini steer_temperature): 'warm' is not a number; expected a positive number, e.g. 0.7",
        ),
        (
            ("--steer-temperature", "inf"),
            "--steer-temperature (ini steer_temperature): 'inf' is not a finite number; expected a positive number, e.g. 0.7",
        ),
        (("--steer-top-p", "x"), "--steer-top-p (ini steer_top_p): 'x' is not a number; expected a probability in [1e-06, 1], e.g. 0.9"),
        (
            ("--steer-max-errors", "some"),
            "--steer-max-errors (ini steer_max_errors): 'some' is not a number; expected a count (0, 1, 2, ...)",
        ),
        (
            ("--steer-batch-size", "big"),
            "--steer-batch-size (ini steer_batch_size): 'big' is not a whole number; expected auto or a positive integer",
        ),
        (("--steer-json", ""), "--steer-json (ini steer_json): the path is empty; expected a file or directory path"),
        (("--steer-heads", "8-x"), "--steer-heads (ini steer_heads): heads '8-x': item '8-x' at position 0 is not a layer number"),
        (("--steer-compile", "fast"), "--steer-compile (ini steer_compile): 'fast' is not one of default, reduce-overhead, max-autotune"),
    ],
)
def test_bad_values_are_usage_errors(pytester: pytest.Pytester, args: tuple[str, ...], message: str) -> None:
    with pytest.raises(pytest.UsageError) as caught:
        pytester.parseconfigure(*args)
    assert str(caught.value).startswith(message)


def test_bad_ini_flag_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nsteer_greedy = maybe\n")
    with pytest.raises(
        pytest.UsageError, match=r"^--steer-greedy \(ini steer_greedy\): invalid truth value 'maybe'; expected true or false"
    ):
        pytester.parseconfigure()


def test_bad_ini_value_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nsteer_limit = ten\n")
    with pytest.raises(pytest.UsageError, match=r"^--steer-limit \(ini steer_limit\): 'ten' is not a whole number"):
        pytester.parseconfigure()


def test_good_values_parse(pytester: pytest.Pytester) -> None:
    from pytest_steer.plugin import steer_session

    config = pytester.parseconfigure("--steer-trials", "3", "--steer-heads", "0-3,7", "--steer-batch-size", "auto", "--steer-greedy")
    settings = steer_session(config).settings
    assert (settings.trials, settings.heads, settings.batch_size, settings.greedy) == (3, "0-3,7", None, True)
    assert settings.compile is None
    assert steer_session(pytester.parseconfigure("--steer-compile", "reduce-overhead")).settings.compile == "reduce-overhead"


def test_range_ends_and_valid_instruction_ids_parse(pytester: pytest.Pytester) -> None:
    from pytest_steer.plugin import steer_session

    config = pytester.parseconfigure(
        "--steer-seed",
        "4294967295",
        "--steer-sample-seed",
        "0",
        "--steer-top-p",
        "1e-6",
        "--steer-instruction-ids",
        "punctuation:no_comma, detectable_format:title",
    )
    settings = steer_session(config).settings
    assert (settings.seed, settings.sample_seed, settings.top_p) == (2**32 - 1, 0, 1e-6)
    assert settings.instruction_ids == ("punctuation:no_comma", "detectable_format:title")
