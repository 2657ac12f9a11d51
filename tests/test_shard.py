"""--steer-shard i/n: shards partition the selected prompts, deterministically."""

from __future__ import annotations

import dataclasses
import random

import pytest

from pytest_steer.plan.data import load_rows
from pytest_steer.plan.options import SteerSettings, settings_from_config
from pytest_steer.plan.sharding import Shard, parse_shard, select_shard


def test_parse_shard() -> None:
    assert parse_shard("2/4") == Shard(2, 4)
    assert parse_shard(" 1 / 1 ") == Shard(1, 1)
    assert str(parse_shard("3/8")) == "3/8"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("2", "is not a shard; use i/n"),
        ("a/b", "is not a shard; use i/n"),
        ("-1/4", "is not a shard; use i/n"),
        ("0/4", "shards are numbered 1 to 4"),
        ("5/4", "shards are numbered 1 to 4"),
        ("1/0", "must be at least 1"),
    ],
)
def test_bad_shards_are_refused(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_shard(text)


def test_bad_shard_option_is_a_usage_error(pytester: pytest.Pytester) -> None:
    with pytest.raises(pytest.UsageError, match=r"--steer-shard \(ini steer_shard\): '0/3'.*numbered 1 to 3"):
        settings_from_config(pytester.parseconfig("--steer-shard", "0/3"))
    assert settings_from_config(pytester.parseconfig("--steer-shard", "2/3")).shard == Shard(2, 3)


@pytest.mark.parametrize("count", [1, 2, 3, 4, 7])
def test_shards_partition_the_prompts_evenly(count: int) -> None:
    rows = load_rows("builtin")
    shards = [select_shard(rows, Shard(index, count)) for index in range(1, count + 1)]
    keys = [[row.key for row in shard] for shard in shards]
    flat = [key for shard in keys for key in shard]
    assert sorted(flat) == sorted(row.key for row in rows)
    assert len(flat) == len(set(flat))
    assert max(map(len, keys)) - min(map(len, keys)) <= 1
    for shard in shards:  # each shard keeps the selection's order
        positions = [rows.index(row) for row in shard]
        assert positions == sorted(positions)


def test_shards_do_not_depend_on_row_order() -> None:
    rows = load_rows("builtin")
    shuffled = list(rows)
    random.Random(3).shuffle(shuffled)
    for index in (1, 2, 3):
        a = {row.key for row in select_shard(rows, Shard(index, 3))}
        b = {row.key for row in select_shard(shuffled, Shard(index, 3))}
        assert a == b
        assert a == {row.key for row in select_shard(rows, Shard(index, 3))}


def test_empty_shard_names_the_fix() -> None:
    rows = load_rows("builtin")[:2]
    with pytest.raises(ValueError, match=r"shard 3/3 holds no prompt: the selection has 2 prompt\(s\); use at most 2 shard"):
        select_shard(rows, Shard(3, 3))


def test_shard_applies_after_selection_and_keeps_all_configs_and_trials() -> None:
    from pytest_steer.plan.collection import plan_cases

    settings = SteerSettings(alpha=(10.0,), trials=2, limit=5)
    everything = plan_cases(settings).cases
    shards = [plan_cases(dataclasses.replace(settings, shard=Shard(i, 2))).cases for i in (1, 2)]
    assert sorted(c.id for s in shards for c in s) == sorted(c.id for c in everything)
    assert [len({c.row.key for c in s}) for s in shards] == [3, 2]
    for shard in shards:
        assert len(shard) == 4 * len({c.row.key for c in shard})  # 2 configs x 2 trials per prompt
    seeds = {c.id: c.seed for c in everything}
    assert all(c.seed == seeds[c.id] for s in shards for c in s)
