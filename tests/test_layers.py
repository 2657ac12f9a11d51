"""The package's layers hold: no import runs back up a layer, and the picture in docs/architecture.md is current."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def load_layers():
    spec = importlib.util.spec_from_file_location("layers", REPO / "scripts" / "layers.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["layers"] = module
    spec.loader.exec_module(module)
    return module


def test_no_import_runs_back_up_a_layer() -> None:
    assert load_layers().upward_imports() == []


def test_every_subpackage_is_a_known_layer() -> None:
    layers = load_layers()
    packages = {path.parent.name for path in (REPO / "pytest_steer").glob("*/__init__.py")}
    assert packages - set(layers.LAYERS) == set(), "add the new subpackage to LAYERS in scripts/layers.py"


def test_an_import_from_a_higher_layer_is_found(tmp_path: Path, monkeypatch) -> None:
    layers = load_layers()
    package = tmp_path / "pytest_steer"
    (package / "store").mkdir(parents=True)
    (package / "store" / "files.py").write_text("def f():\n    from pytest_steer.run.session import X\n")
    monkeypatch.setattr(layers, "ROOT", tmp_path)
    monkeypatch.setattr(layers, "PACKAGE", package)
    assert layers.upward_imports() == ["pytest_steer/store/files.py:2 imports pytest_steer.run.session (store -> run)"]


def test_the_layer_picture_in_the_docs_is_drawn_from_todays_imports() -> None:
    layers = load_layers()
    document = layers.DOC.read_text()
    assert layers.with_picture(document) == document, "run: python scripts/layers.py"


def test_at_most_eight_modules_stand_at_the_top_of_the_package() -> None:
    top = sorted(path.name for path in (REPO / "pytest_steer").glob("*.py"))
    assert len(top) <= 8, top


def test_no_module_is_over_500_lines_but_the_ifeval_checkers() -> None:
    long = {
        str(path.relative_to(REPO)): n
        for path in (REPO / "pytest_steer").rglob("*.py")
        if (n := len(path.read_text().splitlines())) > 500 and path.name != "checkers.py"
    }
    assert long == {}
