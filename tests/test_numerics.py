"""--steer-dtype auto: bfloat16 only where this machine's measured bfloat16 matmul is clearly faster, decided once per machine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pytest_steer.model import numerics
from pytest_steer.model.kernels import KERNEL_FILE
from pytest_steer.model.numerics import BFLOAT16_GAIN, NUMBER_FORMAT_FILE, FormatChoice, choose_format, decide


def test_bfloat16_is_chosen_only_past_the_gain() -> None:
    assert decide(100.0, BFLOAT16_GAIN * 100.0).dtype == "bfloat16"
    assert decide(100.0, BFLOAT16_GAIN * 100.0 - 1).dtype == "float32"
    assert decide(100.0, 60.0, ("avx2",)).dtype == "float32"  # emulated bfloat16 (no avx512_bf16 or AMX) is slower


def test_the_reason_names_the_measure_and_the_flags() -> None:
    native = decide(140.0, 400.0, ("avx512_bf16", "avx512f"))
    assert "2.86x float32's" in native.reason and "at least 1.5x" in native.reason and "avx512_bf16" in native.reason
    emulated = decide(140.0, 50.0, ())
    assert "under 1.5x" in emulated.reason and "none of avx512_bf16" in emulated.reason


def test_the_decision_is_kept_beside_the_cache_and_read_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    measures = iter([decide(100.0, 300.0), decide(100.0, 90.0)])
    monkeypatch.setattr(numerics, "measured_choice", lambda: next(measures))
    first = choose_format("cpu", tmp_path)
    again = choose_format("cpu", tmp_path)  # a noisy second measure would say float32: it is not taken
    assert first.dtype == again.dtype == "bfloat16"
    kept = json.loads((tmp_path / NUMBER_FORMAT_FILE).read_text())
    assert list(kept.values())[0]["dtype"] == "bfloat16"


def test_an_unreadable_kept_decision_is_measured_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / NUMBER_FORMAT_FILE).write_text("{not json")
    monkeypatch.setattr(numerics, "measured_choice", lambda: decide(100.0, 90.0))
    assert choose_format("cpu", tmp_path).dtype == "float32"
    assert json.loads((tmp_path / NUMBER_FORMAT_FILE).read_text())  # rewritten whole


def test_gpus_are_not_measured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(numerics, "measured_choice", lambda: pytest.fail("a GPU's format is not measured"))
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert choose_format("cuda") == FormatChoice("bfloat16")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert choose_format("cuda").dtype == "float32"


def test_this_machine_measures_both_formats() -> None:
    choice = numerics.measured_choice()
    assert choice.float32_gflops and choice.float32_gflops > 0 and choice.bfloat16_gflops and choice.bfloat16_gflops > 0
    assert choice.dtype == decide(choice.float32_gflops, choice.bfloat16_gflops).dtype


def test_a_run_without_the_response_cache_keeps_the_decision_too(pytester: pytest.Pytester, tiny_checkpoint: Path) -> None:
    """Two runs of one checkout (shards of one evaluation) must not decide apart: --steer-no-cache keeps the decision."""
    pytester.makepyfile(test_steer="def test_case(steer_case):\n    pass\n")
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--steer-model", str(tiny_checkpoint), "--steer-limit", "1", "--steer-max-new-tokens", "1",
        "--steer-quality", "none", "--steer-no-cache", "--steer-dtype", "auto", "--rootdir", str(pytester.path),
    )  # fmt: skip
    assert result.ret == 0, result.stdout.str()
    kept = pytester.path / ".pytest_cache" / "d" / "steer-responses" / NUMBER_FORMAT_FILE
    assert kept.is_file()
    assert (kept.parent / KERNEL_FILE).is_file()  # how linear layers multiply, decided alike for the same reason
    assert not [path for path in kept.parent.iterdir() if path.name not in (NUMBER_FORMAT_FILE, KERNEL_FILE)]  # no response cached
