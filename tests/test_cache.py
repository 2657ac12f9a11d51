"""The response cache: keys, hits and misses, untrusted entries, and runs that reuse it."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from pytest_steer.store.responses import GENERATION, QUALITY, ResponseCache, generation_key, resolve_cache_dir

REPO = Path(__file__).resolve().parents[1]
SUITE = str(REPO / "suites" / "ifeval")
KEY_PARTS: dict[str, Any] = {
    "model": {"name": "m", "revision": "r1", "dtype": "float32", "attn_implementation": "eager"},
    "environment": {"device": "cpu", "engine": 1},
    "prompt": "Write a haiku. Use no commas.",
    "steering": {"method": "pasta", "alpha": 10.0, "layers": [[0, None]], "scale_position": "include", "highlights": ["Use no commas."]},
    "generation": {"max_new_tokens": 8, "greedy": False, "temperature": 0.7, "top_p": 1.0},
    "seed": 123,
}
PAYLOAD = {"text": "Leaves fall softly", "n_new_tokens": 5, "missing_spans": [], "prompt": "Write about leaves."}


def test_same_key_hits_and_every_key_part_changes_the_key(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path)
    key = generation_key(**KEY_PARTS)
    assert cache.get(GENERATION, key) is None
    cache.put(GENERATION, key, PAYLOAD)
    assert cache.get(GENERATION, generation_key(**KEY_PARTS)) == PAYLOAD
    variants = {
        "model": {**KEY_PARTS["model"], "revision": "r2"},
        "environment": {**KEY_PARTS["environment"], "device": "cuda"},
        "prompt": KEY_PARTS["prompt"] + " ",
        "steering": {**KEY_PARTS["steering"], "alpha": 5.0},
        "generation": {**KEY_PARTS["generation"], "temperature": 0.8},
        "seed": 124,
    }
    for part, value in variants.items():
        assert cache.get(GENERATION, generation_key(**{**KEY_PARTS, part: value})) is None, part
    for part, value in {
        "heads": [[1, None]],
        "scale_position": "exclude",
        "highlights": ["Write a haiku."],
    }.items():
        steering = {**KEY_PARTS["steering"], {"heads": "layers"}.get(part, part): value}
        assert generation_key(**{**KEY_PARTS, "steering": steering}) != key, part
    assert generation_key(**{**KEY_PARTS, "steering": None}) != key
    assert cache.rejected == 0


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda raw: raw[: len(raw) // 2], id="partial"),
        pytest.param(lambda raw: raw.replace(b"Leaves", b"Leaved"), id="checksum"),
        pytest.param(lambda raw: b"", id="empty"),
        pytest.param(lambda raw: b"\x00\xff garbage", id="garbage"),
    ],
)
def test_damaged_entry_is_a_miss_and_a_new_put_repairs_it(tmp_path: Path, damage: Any) -> None:
    cache = ResponseCache(tmp_path)
    key = generation_key(**KEY_PARTS)
    cache.put(GENERATION, key, PAYLOAD)
    path = cache.path(GENERATION, key)
    path.write_bytes(damage(path.read_bytes()))
    assert cache.get(GENERATION, key) is None
    assert cache.rejected == 1
    cache.put(GENERATION, key, PAYLOAD)
    assert cache.get(GENERATION, key) == PAYLOAD


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"[" * 100_000, id="deeply-nested"),
        pytest.param(b'{"payload": ' + b"[" * 100_000, id="deeply-nested-inside-an-entry"),
        pytest.param(b"[1, 2, 3]", id="a-list"),
        pytest.param(b'"text"', id="a-string"),
        pytest.param(b"null", id="null"),
        pytest.param(b"1" * 5000, id="an-int-too-long-to-parse"),
        pytest.param(
            b'{"format": 1, "key": "K", "payload": {"text": "\\ud800", "n_new_tokens": 1, "missing_spans": []}}', id="lone-surrogate"
        ),
        pytest.param(b'{"format": 1, "key": "K", "payload": [], "checksum": "x"}', id="payload-not-a-dict"),
        pytest.param(b'{"format": 1, "key": "K", "payload": {"text": "t", "n_new_tokens": 1, "missing_spans": [[]]}}', id="spans-not-text"),
    ],
)
def test_no_entry_can_fail_a_read(tmp_path: Path, content: bytes) -> None:
    cache = ResponseCache(tmp_path)
    key = generation_key(**KEY_PARTS)
    path = cache.path(GENERATION, key)
    path.parent.mkdir(parents=True)
    path.write_bytes(content.replace(b'"K"', json.dumps(key).encode()))
    assert cache.get(GENERATION, key) is None
    assert cache.rejected == 1
    cache.put(GENERATION, key, PAYLOAD)
    assert cache.get(GENERATION, key) == PAYLOAD


def test_entry_under_another_key_or_with_wrong_types_is_not_trusted(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path)
    key, other = generation_key(**KEY_PARTS), generation_key(**{**KEY_PARTS, "seed": 1})
    cache.put(GENERATION, key, PAYLOAD)
    cache.path(GENERATION, other).parent.mkdir(parents=True, exist_ok=True)
    cache.path(GENERATION, other).write_bytes(cache.path(GENERATION, key).read_bytes())
    assert cache.get(GENERATION, other) is None
    entry = json.loads(cache.path(GENERATION, key).read_text())
    entry["payload"]["n_new_tokens"] = "5"
    from pytest_steer.store.responses import digest

    entry["checksum"] = digest(entry["payload"])  # self-consistent, but the wrong type
    cache.path(GENERATION, key).write_text(json.dumps(entry))
    assert cache.get(GENERATION, key) is None
    with pytest.raises(ValueError, match="wrong fields"):
        cache.put(QUALITY, key, {"quality": "high"})


def test_unwritable_cache_does_not_stop_the_run(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    cache = ResponseCache(blocker)
    cache.put(GENERATION, generation_key(**KEY_PARTS), PAYLOAD)
    assert len(cache.write_errors) == 1
    assert cache.get(GENERATION, generation_key(**KEY_PARTS)) is None


def test_cache_dir_resolution(tmp_path: Path) -> None:
    assert resolve_cache_dir(True, tmp_path / "x", tmp_path) is None
    assert resolve_cache_dir(False, tmp_path / "x", tmp_path) == tmp_path / "x"
    assert resolve_cache_dir(False, None, tmp_path) == tmp_path / ".pytest_cache" / "d" / "steer-responses"


# --- a runner reusing the cache, on a tiny model ------------------------------------------------


def _settings(model: Path, **changes: Any) -> Any:
    from pytest_steer.plan.options import SteerSettings

    base = SteerSettings(model=str(model), alpha=(10.0,), limit=3, max_new_tokens=6, batch_size=4)
    return dataclasses.replace(base, **changes)


def _run(settings: Any, cache_dir: Path | None) -> dict[str, Any]:
    from pytest_steer.plan.collection import plan_cases
    from pytest_steer.run.runner import runner_for

    plan = plan_cases(settings)
    runner = runner_for(settings, plan, cache_dir=cache_dir)
    return {case.id: runner.record(case) for case in plan.cases}


@pytest.fixture
def no_generation(monkeypatch: pytest.MonkeyPatch) -> None:
    from pytest_steer.engine.generation import Engine
    from pytest_steer.run import runner

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("generated (or loaded the weights) although every response was cached")

    monkeypatch.setattr(Engine, "generate", refuse)
    monkeypatch.setattr(runner, "load_model", refuse)


def test_a_fully_cached_rerun_loads_no_weights(tiny_checkpoint: Path, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    settings = _settings(tiny_checkpoint)  # fluency quality: scored by the model, cached with the response
    first = _run(settings, tmp_path)
    request.getfixturevalue("no_generation")  # from here on, loading the weights or generating fails
    again = _run(settings, tmp_path)
    assert all(record.cached for record in again.values())
    assert {i: (r.response, r.quality) for i, r in again.items()} == {i: (r.response, r.quality) for i, r in first.items()}


def test_rerun_generates_nothing_and_changes_regenerate_only_what_changed(
    tiny_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pytest_steer.engine.generation import Engine

    first = _run(_settings(tiny_checkpoint), tmp_path)
    assert len(first) == 6 and not any(r.cached or r.error for r in first.values())

    generated: list[int] = []
    original = Engine.generate

    def counting(self: Engine, requests: Any, steering: Any = None, **options: Any) -> Any:
        generated.append(len(requests))
        return original(self, requests, steering, **options)

    monkeypatch.setattr(Engine, "generate", counting)
    second = _run(_settings(tiny_checkpoint), tmp_path)
    assert generated == []
    assert all(r.cached for r in second.values())
    assert {i: (r.response, r.quality, r.n_new_tokens) for i, r in first.items()} == {
        i: (r.response, r.quality, r.n_new_tokens) for i, r in second.items()
    }

    more_alphas = _run(_settings(tiny_checkpoint, alpha=(10.0, 2.0)), tmp_path)
    assert sum(generated) == 3  # only the new alpha2 cases
    assert {i for i, r in more_alphas.items() if not r.cached} == {i for i in more_alphas if "-pasta_alpha2-" in i}

    generated.clear()
    _run(_settings(tiny_checkpoint, seed=1), tmp_path)
    assert sum(generated) == 6


def test_damaged_entry_is_regenerated_identically_and_rewritten(tiny_checkpoint: Path, tmp_path: Path) -> None:
    first = _run(_settings(tiny_checkpoint), tmp_path)
    files = sorted((tmp_path / GENERATION).rglob("*.json"))
    assert len(files) == 6
    files[0].write_bytes(files[0].read_bytes()[:40])  # a partial write
    second = _run(_settings(tiny_checkpoint), tmp_path)
    assert sum(not r.cached for r in second.values()) == 1
    assert {i: r.response for i, r in first.items()} == {i: r.response for i, r in second.items()}
    third = _run(_settings(tiny_checkpoint), tmp_path)
    assert all(r.cached for r in third.values())


def test_no_cache_writes_and_reads_nothing(tiny_checkpoint: Path, tmp_path: Path) -> None:
    settings = _settings(tiny_checkpoint, no_cache=True, cache_dir=tmp_path)
    records = _run(settings, resolve_cache_dir(settings.no_cache, settings.cache_dir, settings.rootdir))
    assert not any(r.cached for r in records.values())
    assert list(tmp_path.iterdir()) == []


def test_cache_options_are_parsed(pytester: pytest.Pytester, tmp_path: Path) -> None:
    from pytest_steer.plan.options import settings_from_config

    settings = settings_from_config(pytester.parseconfig("--steer-no-cache", "--steer-cache-dir", str(tmp_path)))
    assert settings.no_cache is True and settings.cache_dir == tmp_path
    assert settings_from_config(pytester.parseconfig()).no_cache is False


def test_a_subset_of_a_batch_generates_the_same_responses(tiny_checkpoint: Path) -> None:
    """What lets the runner generate only the cache misses of a batch."""
    from pytest_steer.engine.generation import Engine
    from pytest_steer.engine.requests import GenerationRequest, GenerationSettings
    from pytest_steer.model.loading import load_model
    from pytest_steer.plan.collection import plan_cases
    from pytest_steer.steering import PASTA

    settings = _settings(tiny_checkpoint, limit=6, max_new_tokens=12)
    cases = [case for case in plan_cases(settings).cases if case.config.steered]
    engine = Engine(load_model(str(tiny_checkpoint), device="cpu"), GenerationSettings(max_new_tokens=12))
    requests = [GenerationRequest(case.row.prompt, case.seed, case.highlights) for case in cases]
    for steering in (None, PASTA(head_config=[0, 1], alpha=10.0)):
        full = engine.generate(requests, steering)
        subset = engine.generate(requests[1::2], steering) + engine.generate(requests[0:1], steering)
        assert subset == full[1::2] + full[0:1]
        assert len({g.text for g in full}) > 1


# --- end to end ---------------------------------------------------------------------------------


def _suite(pytester: pytest.Pytester, model: Path, cache: Path, report: Path, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess(
        SUITE, "-p", "no:cacheprovider", "--rootdir", str(REPO), "--steer-model", str(model),
        "--steer-cache-dir", str(cache), "--steer-report-dir", str(report),
        "--steer-alpha", "10", "--steer-limit", "2", "--steer-max-new-tokens", "8", *args,
    )  # fmt: skip


def _responses(report: Path) -> dict[str, tuple[str, bool]]:
    lines = (report / "cases.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines if line.strip()]
    return {f"{r['key']}-{r['config']}": (r["response"], r["cached"]) for r in records}


def test_second_run_of_the_suite_comes_from_the_cache(pytester: pytest.Pytester, tiny_checkpoint: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = _suite(pytester, tiny_checkpoint, cache, tmp_path / "r1")
    assert first.ret == 0, first.stdout.str()
    assert "from cache" not in first.stdout.str()
    second = _suite(pytester, tiny_checkpoint, cache, tmp_path / "r2")
    assert second.ret == 0, second.stdout.str()
    second.stdout.fnmatch_lines(
        [
            "*[[]steer[]] baseline+pasta_alpha10: 4 cases from cache*",
            "responses: 4 of 4 cases from the response cache*",
        ]
    )
    assert "tokens/s" not in second.stdout.str()
    one, two = _responses(tmp_path / "r1"), _responses(tmp_path / "r2")
    assert len(one) == 4
    assert {k: text for k, (text, _) in one.items()} == {k: text for k, (text, _) in two.items()}
    assert not any(cached for _, cached in one.values()) and all(cached for _, cached in two.values())


REFUSE_TORCH = """
import sys


class RefuseTorch:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "transformers"):
            raise ImportError(f"a fully cached run imported {name}")


sys.meta_path.insert(0, RefuseTorch())
"""


def test_a_fully_cached_rerun_imports_neither_torch_nor_transformers(
    pytester: pytest.Pytester, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    """No tokenizer for planning (prompt lengths are cached too), no steering self-check, no engine: nothing to generate.
    The device (auto) and dtype (auto) are decided without torch where no GPU driver is on the machine."""
    from pytest_steer.model.devices import device_type_without_torch

    device = "auto" if device_type_without_torch("auto") == "cpu" else "cpu"
    cache = tmp_path / "cache"
    assert _suite(pytester, tiny_checkpoint, cache, tmp_path / "r1", "--steer-device", device).ret == 0
    pytester.makepyfile(refuse_torch=REFUSE_TORCH)
    second = _suite(pytester, tiny_checkpoint, cache, tmp_path / "r2", "--steer-device", device, "-p", "refuse_torch")
    assert second.ret == 0, second.stdout.str()
    second.stdout.fnmatch_lines(["responses: 4 of 4 cases from the response cache*"])
    uncached = _suite(pytester, tiny_checkpoint, tmp_path / "empty", tmp_path / "r3", "--steer-device", device, "-p", "refuse_torch")
    assert uncached.ret != 0  # the blocker works: a run with responses to generate needs torch
    assert "a fully cached run imported" in uncached.stdout.str()


def test_prompt_lengths_come_from_the_cache_until_the_tokenizer_changes(tiny_checkpoint: Path, tmp_path: Path, monkeypatch) -> None:
    import shutil

    from pytest_steer.model import loading as models
    from pytest_steer.plan.collection import prompt_token_lengths

    checkpoint = tmp_path / "model"
    shutil.copytree(tiny_checkpoint, checkpoint)
    cache = ResponseCache(tmp_path / "cache")
    prompts = ["Hi.", "Write a haiku about rain."]
    lengths = prompt_token_lengths(str(checkpoint), prompts, cache)
    assert lengths[0] < lengths[1]

    def refuse(name: str, **kwargs: Any) -> None:
        raise AssertionError("loaded the tokenizer although every length was cached")

    monkeypatch.setattr(models, "load_tokenizer", refuse)
    assert prompt_token_lengths(str(checkpoint), prompts, cache) == lengths
    with pytest.raises(AssertionError, match="loaded the tokenizer"):
        prompt_token_lengths(str(checkpoint), ["A prompt never seen."], cache)
    template = checkpoint / "chat_template.jinja"
    template.write_text("{{ messages[0]['content'] }}")  # another chat template: other lengths
    with pytest.raises(AssertionError, match="loaded the tokenizer"):
        prompt_token_lengths(str(checkpoint), prompts, cache)


def test_a_process_that_ran_cases_leaves_its_objects_to_no_exit_collection(
    pytester: pytest.Pytester, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    from pytest_steer.model.devices import device_type_without_torch

    pytester.makepyfile(gc_report="import gc\n\ndef pytest_unconfigure(config):\n    print('frozen objects:', gc.get_freeze_count())\n")
    generated = _suite(pytester, tiny_checkpoint, tmp_path / "cache", tmp_path / "r1", "-p", "gc_report")
    assert generated.ret == 0, generated.stdout.str()
    assert int(generated.stdout.str().split("frozen objects: ")[1].split()[0]) > 100_000
    # a rerun served from the cache imports no torch (where no GPU driver is): it has no heap worth sparing
    cached = _suite(pytester, tiny_checkpoint, tmp_path / "cache", tmp_path / "r2", "-p", "gc_report")
    assert "0 to generate" in cached.stdout.str()
    frozen = int(cached.stdout.str().split("frozen objects: ")[1].split()[0])
    assert frozen == 0 if device_type_without_torch("auto") == "cpu" else frozen > 100_000


METHOD_SOURCE = """
from pytest_steer.steering import PreparedPrompt, SteeringMethod

SUFFIX = "{suffix}"


class Tail(SteeringMethod):
    name = "tail"
    version = {version}

    def prepare(self, prompt, highlights):
        return PreparedPrompt(prompt + {body})
"""


def _method_from_source(folder: Path, module: str, suffix: str = "!", body: str = "SUFFIX", version: int = 1) -> type:
    import importlib.util

    folder.mkdir(exist_ok=True)
    path = folder / f"{module}.py"
    path.write_text(METHOD_SOURCE.format(suffix=suffix, body=body, version=version))
    spec = importlib.util.spec_from_file_location(module, path)
    assert spec is not None and spec.loader is not None
    loaded = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loaded)
    return loaded.Tail


def test_a_users_method_is_keyed_by_its_code_as_well_as_its_params(tmp_path: Path) -> None:
    from pytest_steer.steering.identity import method_identity

    original = _method_from_source(tmp_path / "a", "tail_a")
    renamed = _method_from_source(tmp_path / "b", "tail_b")
    body_changed = _method_from_source(tmp_path / "c", "tail_c", body="SUFFIX * 2")
    constant_changed = _method_from_source(tmp_path / "d", "tail_d", suffix="?")
    assert original().params() == body_changed().params() == constant_changed().params() == {}
    codes = [method_identity(cls) for cls in (original, renamed, body_changed, constant_changed)]
    assert len(set(codes)) == 4  # a new module name, a new method body, a new module constant: each a new key
    assert method_identity(original) == codes[0]
    assert method_identity(type("Sub", (original,), {"__module__": original.__module__})) != codes[0]


def test_a_built_in_method_is_keyed_by_its_name_and_version_not_by_its_files_bytes(tmp_path: Path) -> None:
    from pytest_steer.steering import PASTA, ActAdd, Emphasis
    from pytest_steer.steering.identity import method_identity
    from pytest_steer.store.responses import digest

    original = _method_from_source(tmp_path / "a", "pytest_steer.tail_a")
    moved_and_edited = _method_from_source(tmp_path / "b", "pytest_steer.steering.tail_b", suffix="?", body="SUFFIX * 2")
    bumped = _method_from_source(tmp_path / "c", "pytest_steer.tail_c", version=2)
    assert method_identity(original) == method_identity(moved_and_edited) != method_identity(bumped)
    for method in (PASTA, ActAdd, Emphasis):
        assert method_identity(method) == digest([{"class": method.__name__, "version": method.version}])


def test_the_generation_key_changes_with_the_method_code(tiny_checkpoint: Path, tmp_path: Path) -> None:
    from pytest_steer.plan.collection import plan_cases
    from pytest_steer.run.runner import runner_for

    settings = _settings(tiny_checkpoint, alpha=(), limit=1)
    plan = plan_cases(settings)
    runner = runner_for(settings, plan, cache_dir=tmp_path)
    case = plan.cases[0]
    first = _method_from_source(tmp_path / "v1", "tail_v")
    edited = _method_from_source(tmp_path / "v2", "tail_v", body="SUFFIX + SUFFIX")  # same module name, new code
    assert runner._generation_key(case, first()) == runner._generation_key(case, first())
    assert runner._generation_key(case, first()) != runner._generation_key(case, edited())
    assert runner._generation_key(case, first()) != runner._generation_key(case, None)
