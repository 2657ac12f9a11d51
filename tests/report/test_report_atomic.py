"""Outputs are written whole or not at all; the default report folder is private to its user."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from types import SimpleNamespace

import pytest
from report_fixtures import make_results

from pytest_steer.report.cases import write_cases
from pytest_steer.report.files import UnsafeReportDir, default_report_dir, write_report
from pytest_steer.run.results import RunResults
from pytest_steer.store import atomic


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(directory.iterdir())}


def test_a_writer_failing_midway_keeps_the_old_file_and_leaves_no_temporary(
    results: RunResults, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_cases(results.records, tmp_path / "cases.jsonl")
    before = path.read_bytes()
    import pytest_steer.report.cases as cases_module

    lines = iter(range(len(results.records)))
    real_dumps = cases_module.json.dumps

    def dumps_then_fail(value: object, **kwargs: object) -> str:
        if next(lines) == 5:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_dumps(value, **kwargs)

    monkeypatch.setattr(cases_module.json, "dumps", dumps_then_fail)
    with pytest.raises(OSError, match="No space left"):
        write_cases(list(reversed(results.records)), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["cases.jsonl"]


def test_a_full_disk_leaves_every_report_file_as_it_was(results: RunResults, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_report(make_results(results.records[: len(results.records) // 2]), tmp_path)
    before = _snapshot(tmp_path)

    def disk_full(descriptor: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        write_report(results, tmp_path)
    assert _snapshot(tmp_path) == before  # nothing truncated, no 0-byte file, no temporary left


def test_a_new_file_that_fails_is_not_created(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "out.txt"
    with pytest.raises(RuntimeError), atomic.atomic_open(target) as handle:
        handle.write("half")
        raise RuntimeError("interrupted")
    assert list((tmp_path / "sub").iterdir()) == []


def test_a_completed_write_replaces_the_file_with_the_usual_permissions(tmp_path: Path) -> None:
    target = atomic.write_text(tmp_path / "out.txt", "old")
    atomic.write_text(target, "new")
    assert target.read_text() == "new"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask


def _uncached_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    monkeypatch.setattr("tempfile.gettempdir", lambda: str(tmp_path / "tmp"))
    monkeypatch.setattr("pytest_steer.report.files._user", lambda: "someone")
    (tmp_path / "tmp").mkdir()
    return SimpleNamespace(cache=None, rootpath=tmp_path / "project")


def test_default_report_dir_without_cache_is_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = _uncached_config(tmp_path, monkeypatch)
    directory = default_report_dir(config)
    base = tmp_path / "tmp" / "pytest-steer-someone"
    assert directory.parent == base and directory.name.startswith("project-")
    assert stat.S_IMODE(base.stat().st_mode) == 0o700
    assert default_report_dir(config) == directory  # an existing private folder is reused


def test_default_report_dir_refuses_a_planted_symlink(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = _uncached_config(tmp_path, monkeypatch)
    elsewhere = tmp_path / "attacker"
    elsewhere.mkdir()
    (tmp_path / "tmp" / "pytest-steer-someone").symlink_to(elsewhere)
    with pytest.raises(UnsafeReportDir, match="is a symbolic link.*pass --steer-report-dir"):
        default_report_dir(config)


def test_default_report_dir_refuses_a_folder_others_can_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = _uncached_config(tmp_path, monkeypatch)
    planted = tmp_path / "tmp" / "pytest-steer-someone"
    planted.mkdir()
    planted.chmod(0o777)
    with pytest.raises(UnsafeReportDir, match="can be written by other users.*--steer-report-dir"):
        default_report_dir(config)


def test_default_report_dir_refuses_a_folder_of_another_user(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = _uncached_config(tmp_path, monkeypatch)
    (tmp_path / "tmp" / "pytest-steer-someone").mkdir(mode=0o700)
    monkeypatch.setattr("os.getuid", lambda: os.stat(tmp_path).st_uid + 1)
    with pytest.raises(UnsafeReportDir, match="belongs to another user"):
        default_report_dir(config)


def test_an_unsafe_default_folder_is_reported_and_the_other_outputs_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pytest_steer.plan.options import SteerSettings
    from pytest_steer.report.outputs import write_outputs

    config = _uncached_config(tmp_path, monkeypatch)
    (tmp_path / "tmp" / "pytest-steer-someone").symlink_to(tmp_path)
    written = write_outputs(make_results(), SteerSettings(json=tmp_path / "r.json"), None, config=config)
    assert len(written.failures) == 1 and "--steer-report-dir" in written.failures[0] and "symbolic link" in written.failures[0]
    assert [path.name for path in written.paths] == ["r.json"]
