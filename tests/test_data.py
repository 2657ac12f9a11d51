from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from pytest_steer.plan.data import BUILTIN, DatasetError, PromptRow, Selection, highlights, load_rows, select

ROWS = [
    {
        "key": 1,
        "prompt": "Write a poem about rain. Do not use any commas.",
        "instructions": ["Do not use any commas."],
        "instruction_id_list": ["punctuation:no_comma"],
        "kwargs": [{}],
    },
    {
        "key": 2,
        "prompt": "Describe a cat. Your answer must contain at least 3 placeholders in square brackets.",
        "instructions": ["Your answer must contain at least 3 placeholders in square brackets."],
        "instruction_id_list": ["detectable_content:number_placeholders"],
        "kwargs": [{"num_placeholders": 3.0, "relation": None}],
    },
    {
        "key": 3,
        "prompt": "Tell a story. Answer in all lowercase letters. End with 'Bye.'",
        "instructions": ["Answer in all lowercase letters.", "End with 'Bye.'"],
        "instruction_id_list": ["change_case:english_lowercase", "startend:end_checker"],
        "kwargs": [{}, {"end_phrase": "Bye."}],
    },
]


def write(path: Path, rows: list[dict]) -> Path:
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    elif path.suffix == ".json":
        path.write_text(json.dumps(rows))
    elif path.suffix == ".csv":
        frame = pd.DataFrame([{k: json.dumps(v) if isinstance(v, list) else v for k, v in row.items()} for row in rows])
        frame.to_csv(path, index=False)
    else:
        pd.DataFrame(rows).to_parquet(path)
    return path


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv", ".parquet"])
def test_local_files_load_in_every_format(tmp_path: Path, suffix: str) -> None:
    rows = load_rows(str(write(tmp_path / f"data{suffix}", ROWS)))
    assert [row.key for row in rows] == ["1", "2", "3"]
    assert rows[2].instruction_id_list == ("change_case:english_lowercase", "startend:end_checker")
    assert rows[2].instructions == ("Answer in all lowercase letters.", "End with 'Bye.'")
    assert rows[1].kwargs[0]["num_placeholders"] == 3  # a float from the file becomes the int it means
    assert rows[2].kwargs[1]["end_phrase"] == "Bye."


def test_builtin_suite_loads() -> None:
    rows = load_rows(BUILTIN)
    assert len(rows) >= 75
    assert all(row.instructions for row in rows)


def test_missing_column_names_the_column(tmp_path: Path) -> None:
    bad = [{k: v for k, v in row.items() if k != "kwargs"} for row in ROWS]
    with pytest.raises(DatasetError, match=r"lacks the column\(s\) \['kwargs'\]"):
        load_rows(str(write(tmp_path / "bad.jsonl", bad)))


def test_unknown_instruction_id_names_row_field_position_and_close_matches(tmp_path: Path) -> None:
    bad = json.loads(json.dumps(ROWS))
    bad[2]["instruction_id_list"][1] = "startend:end_checkr"
    with pytest.raises(DatasetError) as caught:
        load_rows(str(write(tmp_path / "bad.jsonl", bad)))
    assert str(caught.value).endswith(
        "row 2 (key 3, line 3): field 'instruction_id_list'[1]: unknown instruction id 'startend:end_checkr'; "
        "did you mean startend:end_checker?"
    )


def test_unknown_instruction_id_without_close_matches_lists_the_known_ids(tmp_path: Path) -> None:
    bad = json.loads(json.dumps(ROWS))
    bad[0]["instruction_id_list"] = ["made:up"]
    with pytest.raises(
        DatasetError,
        match=r"row 0 \(key 1, line 1\): field 'instruction_id_list'\[0\]: unknown instruction id 'made:up'; "
        r"known ids: change_case:capital_word_frequency, .*punctuation:no_comma",
    ):
        load_rows(str(write(tmp_path / "bad.jsonl", bad)))


def test_bad_kwarg_names_row_and_argument(tmp_path: Path) -> None:
    bad = json.loads(json.dumps(ROWS))
    bad[2]["kwargs"][1] = {"end_phrase": "Bye.", "colour": "red"}
    with pytest.raises(DatasetError, match=r"row 2 \(key 3, line 3\).*startend:end_checker.*colour"):
        load_rows(str(write(tmp_path / "bad.jsonl", bad)))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            ['"end"', None],
            r"field 'kwargs'\[0\] \(punctuation:no_comma\): must be a JSON object of the instruction's arguments \(or null\), "
            r"got str 'end'",
        ),
        ([[1, 2], None], r"field 'kwargs'\[0\] \(punctuation:no_comma\): must be a JSON object .*got list \[1, 2\]"),
        ([7, None], r"field 'kwargs'\[0\] \(punctuation:no_comma\): must be a JSON object .*got int 7"),
        (["{}", '{"end_phrase": "Bye."'], r"field 'kwargs'\[1\] \(startend:end_checker\): is text but not JSON \(.*\); give a JSON object"),
    ],
)
def test_kwargs_that_are_not_objects_name_row_field_and_expectation(tmp_path: Path, kwargs: list, message: str) -> None:
    row = {
        "key": "k7",
        "prompt": "Say hi. End with Bye.",
        "instruction_id_list": ["punctuation:no_comma", "startend:end_checker"],
        "kwargs": kwargs,
    }
    if kwargs[1] is None:
        row["kwargs"] = [kwargs[0], {"end_phrase": "Bye."}]
    path = tmp_path / "bad.jsonl"
    path.write_text("\n" + json.dumps(ROWS[0]) + "\n" + json.dumps(row) + "\n")
    with pytest.raises(DatasetError, match=rf"^{path} row 1 \(key k7, line 3\): {message}"):
        load_rows(str(path))


def test_empty_or_null_kwargs_mean_no_arguments(tmp_path: Path) -> None:
    rows = json.loads(json.dumps(ROWS))
    rows[0]["kwargs"] = [None]
    rows[1]["kwargs"] = ['{"num_placeholders": 3}']
    loaded = load_rows(str(write(tmp_path / "ok.json", rows)))
    assert loaded[0].kwargs == ({},)
    assert loaded[1].kwargs[0]["num_placeholders"] == 3


def test_mismatched_lengths_and_duplicate_keys(tmp_path: Path) -> None:
    bad = json.loads(json.dumps(ROWS))
    bad[0]["kwargs"] = [{}, {}]
    with pytest.raises(DatasetError, match="'kwargs' has 2 entries for 1 instruction ids"):
        load_rows(str(write(tmp_path / "a.jsonl", bad)))
    with pytest.raises(DatasetError, match="duplicate key"):
        load_rows(str(write(tmp_path / "b.jsonl", [ROWS[0], ROWS[0]])))


def test_broken_jsonl_line_is_named_by_its_number(tmp_path: Path) -> None:
    path = tmp_path / "broken.jsonl"
    good = json.dumps(ROWS[0])
    path.write_text(f"{good}\n\n{{'key': 2}}\n")
    with pytest.raises(DatasetError, match=r"broken.jsonl:3: not valid JSON \(.* at column 2\); each line must be one JSON object"):
        load_rows(str(path))
    path.write_text(f"{good}\n[1, 2]\n")
    with pytest.raises(DatasetError, match=r"broken.jsonl:2: a JSON list, not an object; each line must be one JSON object"):
        load_rows(str(path))


def test_unknown_source_and_unsupported_suffix(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="not 'builtin', an existing file"):
        load_rows(str(tmp_path / "nothing.jsonl"))
    (tmp_path / "data.txt").write_text("x")
    with pytest.raises(DatasetError, match="unsupported file type '.txt'"):
        load_rows(str(tmp_path / "data.txt"))


def test_hub_dataset_without_network_names_offline_alternatives(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr("pytest_steer.plan.data.hub_reachable", lambda: False)
    with pytest.raises(DatasetError, match="the dataset .builtin. \\(the built-in sample suite\\)"):
        load_rows("ibm-research/Split-IFEval")


def rows_for(ids_per_row: list[list[str]]) -> list[PromptRow]:
    return [PromptRow(f"k{i:02d}", f"prompt {i}.", (), tuple(ids), tuple({} for _ in ids)) for i, ids in enumerate(ids_per_row)]


def test_selection_single_instruction_ids_and_limit() -> None:
    rows = rows_for([["a"], ["b"], ["a", "b"], ["c"], ["a"]])
    assert [r.key for r in select(rows, Selection(single_instruction=True))] == ["k00", "k01", "k03", "k04"]
    assert [r.key for r in select(rows, Selection(instruction_ids=("a",)))] == ["k00", "k02", "k04"]
    assert [r.key for r in select(rows, Selection(single_instruction=True, instruction_ids=("a",), limit=1))] == ["k00"]


def test_per_instruction_sampling_is_seeded_and_order_independent() -> None:
    rows = rows_for([["a"]] * 10 + [["b"]] * 10)
    selection = Selection(per_instruction=3, sample_seed=7)
    chosen = select(rows, selection)
    assert len(chosen) == 6
    assert sum(r.instruction_id_list == ("a",) for r in chosen) == 3
    assert [r.key for r in select(list(reversed(rows)), selection)] == [r.key for r in reversed(chosen)]
    assert {r.key for r in select(rows, Selection(per_instruction=3, sample_seed=8))} != {r.key for r in chosen}


def test_empty_selection_is_an_error() -> None:
    with pytest.raises(DatasetError, match="selection from the dataset is empty.*instruction_ids"):
        select(rows_for([["a"]]), Selection(instruction_ids=("zzz",)))


def test_highlight_modes() -> None:
    with_texts = PromptRow("1", "Write. Use no commas.", ("Use no commas.",), ("punctuation:no_comma",), ({},))
    plain = PromptRow("2", "Write a poem.\nIt must be short. Answer in French!", (), ("language:response_language",), ({"language": "fr"},))
    assert highlights(with_texts, "auto") == ("Use no commas.",)
    assert highlights(plain, "auto") == ("Answer in French!",)
    assert highlights(plain, "prompt") == (plain.prompt,)
    with pytest.raises(DatasetError, match="highlight last-sentence or prompt"):
        highlights(plain, "instructions")
