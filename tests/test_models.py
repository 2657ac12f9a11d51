from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pytest_steer.model.loading import (
    EMBEDDED,
    ModelLoadError,
    check_model_source,
    embedded_checkpoint,
    load_model,
    resolve_device,
    resolve_dtype,
)
from pytest_steer.model.numerics import measured_choice
from pytest_steer.store.hub import HubUnavailableError


def test_local_checkpoint_loads_with_left_padding_and_fingerprint(tiny_checkpoint: Path) -> None:
    loaded = load_model(str(tiny_checkpoint), device="cpu", dtype="float32")
    assert loaded.model.config.num_hidden_layers == 2
    assert loaded.tokenizer.padding_side == "left"
    assert loaded.tokenizer.pad_token_id is not None
    assert loaded.fingerprint.name == str(tiny_checkpoint)
    assert loaded.fingerprint.revision.startswith("local:")
    assert loaded.fingerprint.dtype == "float32"
    assert loaded.fingerprint.attn_implementation == "eager"
    assert not any(p.requires_grad for p in loaded.model.parameters())


def test_dtype_and_attention_options_reach_the_model(tiny_checkpoint: Path) -> None:
    loaded = load_model(str(tiny_checkpoint), device="cpu", dtype="bfloat16", attn_implementation="sdpa")
    assert loaded.model.dtype == torch.bfloat16
    assert loaded.model.config._attn_implementation == "sdpa"
    assert loaded.fingerprint.dtype == "bfloat16"


def test_unsupported_attention_is_refused(tiny_checkpoint: Path) -> None:
    with pytest.raises(ModelLoadError, match="flash_attention_2.*eager, sdpa"):
        load_model(str(tiny_checkpoint), attn_implementation="flash_attention_2")


def test_auto_device_and_dtype_on_this_machine() -> None:
    device = resolve_device("auto")
    if torch.cuda.is_available():
        assert device.type == "cuda"
        assert resolve_dtype("auto", device) in (torch.bfloat16, torch.float32)
    else:
        assert device.type in ("cpu", "mps")
        expected = torch.bfloat16 if device.type == "cpu" and measured_choice().dtype == "bfloat16" else torch.float32
        assert resolve_dtype("auto", device) == expected


def test_auto_device_pins_one_gpu_per_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert [resolve_device("auto", worker).index for worker in (0, 1, 2, 3)] == [0, 1, 0, 1]
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert resolve_dtype("auto", torch.device("cuda", 1)) == torch.bfloat16


def test_bad_device_and_dtype_name_the_fix() -> None:
    with pytest.raises(ModelLoadError, match="not a torch device"):
        resolve_device("gpu0")
    with pytest.raises(ModelLoadError, match="float32, bfloat16, float16"):
        resolve_dtype("fp8", torch.device("cpu"))


def test_missing_path_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="neither an existing local path nor a Hugging Face model id"):
        check_model_source(str(tmp_path / "no" / "such" / "model"))


def test_a_directory_without_a_model_or_a_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="holds no model \\(no config.json\\)"):
        check_model_source(str(tmp_path))
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"")
    with pytest.raises(ModelLoadError, match="is a file; give the checkpoint directory"):
        check_model_source(str(weights))


def test_a_directory_without_a_model_fails_collection_once(pytester: pytest.Pytester, tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parents[1]
    result = pytester.runpytest_subprocess(
        str(repo / "suites" / "ifeval"),
        "-p",
        "no:cacheprovider",
        "--rootdir",
        str(repo),
        "--steer-model",
        str(tmp_path),
        "--steer-alpha",
        "10",
        "--steer-limit",
        "2",
    )
    output = result.stdout.str()
    assert result.ret == 2, output
    assert output.count("holds no model") == 1, output
    assert "crashed" not in output and "Traceback" not in output


def test_hub_id_offline_fails_fast_and_names_alternatives(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty cache
    with pytest.raises(HubUnavailableError, match="HF_HUB_OFFLINE.*the model 'embedded'"):
        load_model("some-org/some-model-that-is-not-cached", device="cpu")


def test_hub_id_without_network_fails_before_any_download(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setattr("pytest_steer.store.hub.hub_reachable", lambda: False)
    with pytest.raises(HubUnavailableError, match="cannot be reached"):
        load_model("some-org/some-model-that-is-not-cached", device="cpu")


def test_embedded_model_is_converted_once_and_fingerprinted() -> None:
    checkpoint = embedded_checkpoint()
    assert (checkpoint / "model.safetensors").is_file()
    loaded = load_model(EMBEDDED, device="cpu", dtype="float32")
    config = loaded.model.config
    assert (config.num_hidden_layers, config.num_attention_heads, config.num_key_value_heads) == (30, 9, 3)
    assert config.vocab_size == 49152
    assert not hasattr(config, "quantization_config")
    assert loaded.fingerprint.revision.startswith("sha256:")
    assert loaded.tokenizer.pad_token == loaded.tokenizer.eos_token
    assert embedded_checkpoint() == checkpoint


def test_a_model_that_fails_to_load_is_one_error_and_stops_the_run(
    pytester: pytest.Pytester, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(tiny_checkpoint, broken)
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")  # config.json is fine: collection passes
    repo = Path(__file__).resolve().parents[1]
    result = pytester.runpytest_subprocess(
        str(repo / "suites" / "ifeval"),
        "-p",
        "no:cacheprovider",
        "--rootdir",
        str(repo),
        "--steer-model",
        str(broken),
        "--steer-limit",
        "3",
        "--steer-no-cache",
    )
    output = result.stdout.str()
    assert result.ret == pytest.ExitCode.INTERRUPTED, output
    assert result.parseoutcomes().get("errors") == 1  # the first case; the others never ran
    # the cases it could not run are left out, as a stopped run leaves them: its report is partial, not failed
    result.stdout.fnmatch_lines(
        ["partial run: the run ended early (pytest-steer: --steer-model *: the model failed to load: SafetensorError*"]
    )
    assert "crashed" not in output and "Traceback" not in output and "direct cause" not in output
