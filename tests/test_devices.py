from __future__ import annotations

import pytest

from pytest_steer.model.devices import visible_gpu_count


@pytest.mark.parametrize(("value", "count"), [("0,1", 2), ("3", 1), ("", 0), ("-1", 0)])
def test_cuda_visible_devices_decides(monkeypatch: pytest.MonkeyPatch, value: str, count: int) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", value)
    assert visible_gpu_count() == count


def test_nvidia_smi_listing_is_counted(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\necho 'GPU 0: NVIDIA H100 (UUID: a)'\necho 'GPU 1: NVIDIA H100 (UUID: b)'\n")
    fake.chmod(0o755)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert visible_gpu_count() == 2


def test_auto_workers_follow_the_gpus(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2")
    pytester.makepyfile(test_one="def test_one():\n    pass\n")
    result = pytester.runpytest_subprocess("-n", "auto", "-p", "no:cacheprovider")
    result.stdout.fnmatch_lines(["*created: 3/3 workers*"])
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2")
    cpu_only = pytester.runpytest_subprocess("-n", "auto", "-p", "no:cacheprovider", "--steer-device", "cpu")
    assert "created: 3/3 workers" not in cpu_only.stdout.str()


def test_cpu_is_known_without_torch_only_where_no_gpu_driver_is(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    from pytest_steer.model import devices

    monkeypatch.setattr(devices.platform, "system", lambda: "Linux")
    monkeypatch.setattr(devices, "GPU_DEVICE_NODES", (str(tmp_path / "nvidiactl"),))
    assert devices.device_type_without_torch("auto") == "cpu"
    assert devices.device_type_without_torch("cpu") == "cpu"
    assert devices.device_type_without_torch("cuda:0") is None  # torch checks that it is there
    (tmp_path / "nvidiactl").touch()
    assert devices.device_type_without_torch("auto") is None  # a driver is there: torch decides
    monkeypatch.setattr(devices.platform, "system", lambda: "Darwin")
    (tmp_path / "nvidiactl").unlink()
    assert devices.device_type_without_torch("auto") is None  # an Apple GPU is seen by torch alone


def test_where_cpu_is_known_without_torch_torch_agrees() -> None:
    from pytest_steer.model.devices import device_type_without_torch
    from pytest_steer.model.loading import resolve_device

    known = device_type_without_torch("auto")
    if known is None:
        pytest.skip("a GPU driver is on this machine: auto is torch's to decide")
    assert resolve_device("auto").type == known
