"""Checks before any generation: each bad setting fails at once with one message naming the option and the fix."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pytest_steer.model.loading import ModelLoadError, read_model_config
from pytest_steer.plan.cases import SteeringConfig
from pytest_steer.plan.preflight import (
    PreflightError,
    check_baseline_file,
    check_context,
    check_device,
    check_dtype,
    check_gate_selectors,
    check_heads,
    check_reward_model_offline,
    check_writable_dir,
    check_writable_file,
)

TINY_CONFIG = {"model_type": "llama", "num_hidden_layers": 4, "num_attention_heads": 6, "max_position_embeddings": 512}


def test_importing_preflight_imports_no_torch() -> None:
    code = "import sys, pytest_steer.plan.preflight; sys.exit('torch' in sys.modules or 'transformers' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], env={**os.environ}).returncode == 0


# ---------------------------------------------------------------------------- output paths


def test_writable_paths_pass_and_leave_nothing_behind(tmp_path: Path) -> None:
    check_writable_file(tmp_path / "new" / "deeper" / "r.json", "--steer-json")
    check_writable_dir(tmp_path / "report", "--steer-report-dir")
    existing = tmp_path / "old.json"
    existing.write_text("{}")
    check_writable_file(existing, "--steer-json")
    check_writable_dir(tmp_path, "--steer-report-dir")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.json"]


def test_unwritable_file_names_option_value_and_fix() -> None:
    with pytest.raises(PreflightError) as caught:
        check_writable_file("/proc/forbidden/r.json", "--steer-json")
    message = str(caught.value)
    assert message.startswith("--steer-json /proc/forbidden/r.json: cannot write there (cannot create files in /proc: ")
    assert message.endswith("); choose a writable path")


def test_unwritable_dir_is_refused() -> None:
    with pytest.raises(PreflightError, match=r"^--steer-report-dir /proc/forbidden: cannot write there .*choose a writable path"):
        check_writable_dir("/proc/forbidden", "--steer-report-dir")


def test_paths_under_a_file_or_onto_a_directory_are_refused(tmp_path: Path) -> None:
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    with pytest.raises(PreflightError, match=r"file.txt is a file, not a directory\); choose a writable path"):
        check_writable_file(blocker / "r.json", "--steer-json")
    with pytest.raises(PreflightError, match=r"^--steer-report-dir .*file.txt: is a file, not a directory"):
        check_writable_dir(blocker, "--steer-report-dir")
    with pytest.raises(PreflightError, match=r"^--steer-json .*: is a directory; give a file path inside it"):
        check_writable_file(tmp_path, "--steer-json")


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root may write into read-only folders")
def test_read_only_folder_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(PreflightError, match="cannot write there"):
            check_writable_file(folder / "r.json", "--steer-save")
    finally:
        folder.chmod(0o700)


# ---------------------------------------------------------------------------- model configuration


def test_config_of_a_local_checkpoint(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps(TINY_CONFIG))
    assert read_model_config(str(tmp_path)) == TINY_CONFIG
    assert read_model_config(str(tmp_path / "missing")) is None


def test_config_of_a_cached_hub_id_and_of_an_uncached_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "models--org--tiny"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "snapshots" / commit / "config.json").write_text(json.dumps(TINY_CONFIG))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    assert read_model_config("org/tiny") == TINY_CONFIG
    assert read_model_config(f"org/tiny@{commit}") == TINY_CONFIG
    assert read_model_config("org/not-cached") is None


def test_broken_config_is_named(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("[" * 100_000)
    with pytest.raises(ModelLoadError, match=r"^model .*: cannot read .*config.json"):
        read_model_config(str(tmp_path))
    (tmp_path / "config.json").write_text("[1, 2]")
    with pytest.raises(ModelLoadError, match="holds no JSON object"):
        read_model_config(str(tmp_path))


def test_heads_within_the_model_pass() -> None:
    check_heads("0-3", TINY_CONFIG)
    check_heads('{"3": [0, 5]}', TINY_CONFIG)
    check_heads("40", None)  # no config: the syntax alone


@pytest.mark.parametrize(
    ("heads", "message"),
    [
        ("2-4", "--steer-heads '2-4' names layer 4, but the model has 4 layers (0-3); choose layers below 4"),
        ('{"1": [6]}', "--steer-heads '{\"1\": [6]}': head_config names head 6 of layer 1, but the model has 6 attention heads"),
        ("8,x", "--steer-heads '8,x': item 'x' at position 2 is not a layer number"),
    ],
)
def test_heads_beyond_the_model_or_malformed(heads: str, message: str) -> None:
    with pytest.raises(PreflightError) as caught:
        check_heads(heads, TINY_CONFIG)
    assert str(caught.value).startswith(message)


def test_heads_read_gpt2_style_and_nested_configs() -> None:
    with pytest.raises(PreflightError, match="the model has 2 layers"):
        check_heads("2", {"n_layer": 2, "n_head": 4})
    with pytest.raises(PreflightError, match="the model has 3 layers"):
        check_heads("5", {"text_config": {"num_hidden_layers": 3, "num_attention_heads": 2}})


def test_context_fits() -> None:
    check_context(TINY_CONFIG, max_new_tokens=256, longest_prompt_tokens=256)
    check_context(None, max_new_tokens=10**6, longest_prompt_tokens=10**6)
    check_context({"model_type": "x"}, max_new_tokens=10**6, longest_prompt_tokens=10**6)


def test_context_too_short_says_how_many_tokens_fit() -> None:
    with pytest.raises(PreflightError) as caught:
        check_context(TINY_CONFIG, max_new_tokens=400, longest_prompt_tokens=200)
    assert str(caught.value) == (
        "--steer-max-new-tokens 400: the longest prompt has 200 tokens and the model's context holds 512 "
        "(max_position_embeddings), so 312 new tokens fit; use --steer-max-new-tokens 312 or less"
    )
    with pytest.raises(PreflightError, match="longest prompt alone has 600 tokens.*so no new token fits"):
        check_context(TINY_CONFIG, max_new_tokens=1, longest_prompt_tokens=600)
    with pytest.raises(PreflightError, match="^--generation-budget 900:"):
        check_context({"n_positions": 1024}, max_new_tokens=900, longest_prompt_tokens=200, option="--generation-budget")


# ---------------------------------------------------------------------------- device and dtype


def test_cpu_and_auto_devices_pass() -> None:
    check_device("cpu")
    check_device("auto")
    check_dtype("auto")
    check_dtype("float32", "cpu")
    check_dtype("bfloat16", "cpu")


def _gpus(monkeypatch: pytest.MonkeyPatch, count: int, bf16: bool = True) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: bf16)


def test_cuda_without_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    _gpus(monkeypatch, 0)
    with pytest.raises(PreflightError, match="^--steer-device 'cuda' asks for CUDA but torch sees no CUDA device; use cpu or auto$"):
        check_device("cuda")


def test_cuda_index_beyond_the_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    _gpus(monkeypatch, 1)
    check_device("cuda:0")
    with pytest.raises(PreflightError) as caught:
        check_device("cuda:3")
    assert str(caught.value) == "--steer-device 'cuda:3': torch sees 1 CUDA device(s) (cuda:0-cuda:0); use cuda:N with N below 1, or auto"


def test_mps_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(PreflightError, match="^--steer-device 'mps': torch has no usable MPS"):
        check_device("mps")


def test_bogus_device_name() -> None:
    with pytest.raises(PreflightError, match="^--steer-device 'gpu0' is not a torch device; use auto, cpu, cuda or cuda:N"):
        check_device("gpu0")


def test_unknown_dtype_and_bfloat16_without_support(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(PreflightError, match="^--steer-dtype 'fp8' is not supported; use auto or one of float32, bfloat16, float16$"):
        check_dtype("fp8")
    _gpus(monkeypatch, 1, bf16=False)
    check_dtype("auto", "cuda")  # auto falls back to float32
    check_dtype("float16", "cuda")
    with pytest.raises(PreflightError, match="^--steer-dtype 'bfloat16': the CUDA device cuda does not support bfloat16; use float16"):
        check_dtype("bfloat16", "cuda")


# ---------------------------------------------------------------------------- baseline file


def test_a_saved_baseline_passes(tmp_path: Path) -> None:
    from pytest_steer.stats.baseline import save_run

    check_baseline_file(save_run({"dataset": {}}, [], tmp_path / "base.json"))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such file; save a baseline there first"),
        ("{not json", "not JSON"),
        ("[" * 100_000, "not JSON"),
        (b"\xff\xfe", "not JSON"),
        ('[{"format": "pytest-steer-baseline/1"}]', "not a pytest-steer-baseline/1 file"),
        ('{"format": "pytest-steer-baseline/1", "configs": []}', "lacks its 'run' object or 'configs' list"),
        ('{"format": "pytest-steer-baseline/1", "run": {}, "configs": [3]}', "malformed config entry"),
        ('{"format": "pytest-steer-baseline/1", "run": {}, "configs": [{"per_prompt": {}}]}', "malformed config entry"),
    ],
)
def test_bad_baseline_files(tmp_path: Path, content: Any, message: str) -> None:
    path = tmp_path / "base.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    with pytest.raises(PreflightError, match=f"^--steer-baseline {path}: .*{message}"):
        check_baseline_file(path)


def test_baseline_that_is_a_directory(tmp_path: Path) -> None:
    with pytest.raises(PreflightError, match=f"^--steer-baseline {tmp_path}: cannot read it"):
        check_baseline_file(tmp_path)


# ---------------------------------------------------------------------------- gates


def configs(**alphas: float | None) -> list[SteeringConfig]:
    """Configs by name: None is the baseline, a number PASTA at that alpha, a string another method."""
    made = []
    for name, value in alphas.items():
        if value is None:
            made.append(SteeringConfig(name, None))
        elif isinstance(value, str):
            made.append(SteeringConfig(name, value))
        else:
            made.append(SteeringConfig(name, "pasta", (("alpha", value),)))
    return made


CONFIGS = configs(baseline=None, alpha10=10.0)


@pytest.mark.parametrize(
    "gate",
    [
        "strict_prompt_accuracy >= 0.5",
        "all: quality >= -3",
        "alpha=10: strict_prompt_accuracy - baseline >= 0",
        "alpha=1e1: quality >= 0",
        "baseline: loose_instruction_accuracy > 0.6",
        "alpha10: follow_rate[detectable_format:title] >= 0.8",
        "quality - baseline >= -0.5",
    ],
)
def test_gates_that_select_a_config_pass(gate: str) -> None:
    check_gate_selectors([gate], CONFIGS)


def test_gate_on_an_alpha_the_run_lacks() -> None:
    with pytest.raises(PreflightError) as caught:
        check_gate_selectors(["strict_prompt_accuracy >= 0", "alpha=7: quality >= 0"], CONFIGS)
    assert str(caught.value) == (
        "--steer-gate 'alpha=7: quality >= 0' selects alpha 7, which this run does not have "
        "(configs: baseline, alpha10); add --steer-alpha 7 or change the selector"
    )


def test_gate_selection_follows_the_alphas_not_the_names() -> None:
    renamed = configs(unsteered=None, pasta_alpha10=10.0)
    check_gate_selectors(["alpha=10: quality >= 0", "pasta_alpha10: quality >= 0"], renamed)
    with pytest.raises(
        PreflightError, match=r"selects config 'alpha10', which this run does not have \(configs: unsteered, pasta_alpha10\)"
    ):
        check_gate_selectors(["alpha10: quality >= 0"], renamed)


def test_delta_gate_without_a_steered_config_or_a_baseline() -> None:
    with pytest.raises(PreflightError, match="selects a steered config, which this run does not have .*add --steer-alpha A"):
        check_gate_selectors(["quality - baseline >= 0"], configs(baseline=None))
    with pytest.raises(PreflightError, match="compares with the baseline, which this run does not have"):
        check_gate_selectors(["quality - baseline >= 0"], configs(alpha10=10.0))


def test_a_delta_gate_selects_a_method_without_alpha() -> None:
    check_gate_selectors(["emphasis: quality - baseline >= 0", "quality - baseline >= 0"], configs(baseline=None, emphasis="emphasis"))
    with pytest.raises(PreflightError, match="^--steer-fail-if 'alpha=10: quality < 0' selects alpha 10"):
        check_gate_selectors(["alpha=10: quality < 0"], configs(baseline=None, emphasis="emphasis"), option="--steer-fail-if")


def test_gate_syntax_error_names_the_option() -> None:
    with pytest.raises(PreflightError, match="^--steer-gate 'qualty >= 0': invalid gate: unknown metric 'qualty'"):
        check_gate_selectors(["qualty >= 0"], CONFIGS)


# ---------------------------------------------------------------------------- reward model


def test_reward_model_offline_and_uncached_fails_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(PreflightError) as caught:
        check_reward_model_offline("reward:nobody-here/no-such-reward-model")
    message = str(caught.value)
    assert message.startswith("--steer-quality reward:nobody-here/no-such-reward-model: cannot load reward model")
    assert "HF_HUB_OFFLINE is set" in message
    assert "--steer-quality fluency" in message


def test_unreachable_hub_fails_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    import pytest_steer.store.hub

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(pytest_steer.store.hub, "hub_reachable", lambda: False)
    with pytest.raises(PreflightError, match="cannot be reached.*Offline alternatives: a local reward model directory"):
        check_reward_model_offline("reward:nobody-here/no-such-reward-model")


def test_reward_model_checks_pass_when_nothing_needs_the_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    check_reward_model_offline("fluency")
    check_reward_model_offline("none")
    check_reward_model_offline(f"reward:{tmp_path}")


# ---------------------------------------------------------------------------- baseline settings and quality checks


def _spec(**changes: Any) -> Any:
    from pytest_steer.plan.collection import run_configs
    from pytest_steer.plan.options import SteerSettings
    from pytest_steer.plan.spec import RunSpec
    from pytest_steer.steering.registry import method_registry

    settings = SteerSettings(**{"alpha": (10.0,), "max_new_tokens": 4, **changes})
    return RunSpec.from_settings(settings, run_configs(settings, method_registry()))


def _saved(tmp_path: Path, **changes: Any) -> Path:
    from pytest_steer.stats.baseline import save_run

    run = _spec(**changes).fingerprint({"name": "m"}, n_prompts=12, rootdir=tmp_path)
    return save_run(run, [], tmp_path / "base.json")


def test_a_baseline_of_the_same_settings_passes_whatever_the_seed_trials_and_model(tmp_path: Path) -> None:
    path = _saved(tmp_path)
    check_baseline_file(path, _spec())
    check_baseline_file(path, _spec(seed=7, trials=3, model="other/model", limit=None))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"max_new_tokens": 5}, "--steer-max-new-tokens 4 (this run: 5)"),
        ({"temperature": 0.9}, "--steer-temperature 0.7 (this run: 0.9)"),
        ({"greedy": True}, "--steer-greedy False (this run: True)"),
        ({"top_p": 0.9}, "--steer-top-p 1.0 (this run: 0.9)"),
        ({"dataset": "other.jsonl"}, "--steer-dataset 'builtin' (this run: 'other.jsonl')"),
        ({"instruction_ids": ("punctuation:no_comma",)}, "--steer-instruction-ids [] (this run: ['punctuation:no_comma'])"),
        ({"quality": "none"}, "--steer-quality 'fluency' (this run: 'none')"),
        (
            {"scale_position": "exclude"},
            "config pasta_alpha10 with {'method': 'pasta', 'params': {'alpha': 10.0, 'heads': None, "
            "'scale_position': 'include'}} (this run: {",
        ),
    ],
)
def test_a_baseline_of_other_settings_is_refused_naming_option_values_and_fix(tmp_path: Path, changes: dict, message: str) -> None:
    path = _saved(tmp_path)
    with pytest.raises(PreflightError) as caught:
        check_baseline_file(path, _spec(**changes))
    text = str(caught.value)
    assert text.startswith(f"--steer-baseline {path} was saved with other settings than this run's: ")
    assert message in text  # beside the dataset file's digest, when the dataset changed
    assert text.endswith("; run with the saved settings to compare with it, or save a baseline of these settings with --steer-save")


def test_every_differing_setting_is_named_in_one_message(tmp_path: Path) -> None:
    path = _saved(tmp_path)
    with pytest.raises(PreflightError) as caught:
        check_baseline_file(path, _spec(max_new_tokens=8, quality="none"))
    assert "--steer-max-new-tokens 4 (this run: 8); --steer-quality 'fluency' (this run: 'none')" in str(caught.value)


def test_quality_checks_are_refused_when_quality_is_not_scored() -> None:
    from pytest_steer.plan.options import SteerSettings
    from pytest_steer.plan.preflight import check_quality_is_scored

    check_quality_is_scored(SteerSettings(quality="none", gate=("strict_prompt_accuracy >= 0",), compare_fail="0.1"))
    check_quality_is_scored(SteerSettings(gate=("quality >= -3",), fail_if=("quality - baseline < -1",)))
    with pytest.raises(PreflightError) as caught:
        check_quality_is_scored(SteerSettings(quality="none", fail_if=("alpha=10: quality - baseline < -1",)))
    assert str(caught.value) == (
        "--steer-fail-if 'alpha=10: quality - baseline < -1' reads quality, which --steer-quality none does not score; "
        "score quality with --steer-quality fluency (or reward:<model>), or drop the quality check"
    )
    with pytest.raises(PreflightError, match="^--steer-gate 'quality >= -3' reads quality"):
        check_quality_is_scored(SteerSettings(quality="none", gate=("quality >= -3",)))
    with pytest.raises(PreflightError, match="^--steer-compare-fail '0.1,quality:0.5' compares quality"):
        check_quality_is_scored(SteerSettings(quality="none", baseline=Path("b.json"), compare_fail="0.1,quality:0.5"))


def test_follow_rate_of_an_unknown_instruction_id_is_refused_with_the_nearest() -> None:
    with pytest.raises(PreflightError) as caught:
        check_gate_selectors(["follow_rate[punctuation:no_coma] >= 0.5"], CONFIGS)
    assert str(caught.value).startswith(
        "--steer-gate 'follow_rate[punctuation:no_coma] >= 0.5': invalid gate: unknown instruction id 'punctuation:no_coma'; "
        "did you mean punctuation:no_comma"
    )
