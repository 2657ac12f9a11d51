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
