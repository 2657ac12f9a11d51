"""``steer.*`` properties in JUnit XML, as text CI tools parse: plain strings, or JSON for everything else.

Case and gate properties go on their ``<testcase>``; the run's model and versions go on
the ``<testsuite>`` through pytest's own JUnit writer, which only the process that writes
the file holds (a plain run, or the xdist controller).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any


def property_value(value: Any) -> str:
    """A string as is; anything else as JSON (``true``/``false``, ``null``, numbers, objects)."""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"), default=str)


def properties(pairs: Iterable[tuple[str, Any]]) -> list[tuple[str, str]]:
    return [(name, property_value(value)) for name, value in pairs]


def suite_properties(run: Mapping[str, Any], choice: Mapping[str, Any] | None = None) -> list[tuple[str, str]]:
    """What the run evaluated and with which software: model, data, shard, commit, versions; what auto chose."""
    model = run.get("model") or {}
    dataset = run.get("dataset") or {}
    provenance = run.get("provenance") or {}
    pairs: list[tuple[str, Any]] = [
        ("steer.model", model.get("name")),
        ("steer.model_revision", model.get("revision")),
        ("steer.dtype", model.get("dtype")),
        ("steer.dataset", dataset.get("source")),
        ("steer.n_prompts", dataset.get("n_prompts")),
        ("steer.shard", run.get("shard")),
        ("steer.git_commit", run.get("git_commit")),
        ("steer.devices", ",".join(provenance.get("devices") or [])),
        ("steer.python", provenance.get("python")),
    ]
    pairs += [(f"steer.version.{name}", version) for name, version in (run.get("versions") or {}).items() if version is not None]
    if choice is not None:
        pairs.append((f"steer.chosen.{choice['method']}.{choice['parameter']}", "none" if choice["chosen"] is None else choice["chosen"]))
    return properties((name, value) for name, value in pairs if value not in (None, ""))


def add_suite_properties(config: Any, run: Mapping[str, Any], choice: Mapping[str, Any] | None = None) -> None:
    """Add the run's suite properties to the JUnit file this process writes, if any (before it is written)."""
    from _pytest.junitxml import xml_key

    xml = config.stash.get(xml_key, None)
    if xml is None:  # no --junitxml, or an xdist worker
        return
    for name, value in suite_properties(run, choice):
        xml.add_global_property(name, value)
