"""Checks that run before any generation, so that a bad setting fails in seconds, not after a batch.

Each check is a plain function that returns nothing when the setting can work and
otherwise raises :class:`PreflightError` with one message naming the option, the value
and the fix. Nothing here imports torch or transformers at import time; checks that
need them import them when called.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_steer.model.devices import device_type_without_torch
from pytest_steer.plan.cases import SteeringConfig
from pytest_steer.plan.option_values import QUALITY_NONE, REWARD_PREFIX, reward_model_alternatives
from pytest_steer.plan.options import SteerSettings
from pytest_steer.plan.spec import RunSpec
from pytest_steer.stats.gate_language import GateSyntaxError, parse_gate
from pytest_steer.stats.metrics import QUALITY_METRIC
from pytest_steer.steering.pasta.heads import normalize_head_config, parse_heads, resolve_heads
from pytest_steer.store.hub import HubUnavailableError, looks_like_hub_id, require_hub, split_revision

if TYPE_CHECKING:
    from pytest_steer.stats.baseline import Difference
    from pytest_steer.stats.gate_language import Gate, Selector


class PreflightError(ValueError):
    """A setting cannot work; the message names the option, the value and the fix."""


def with_option(option: str, message: str) -> str:
    """A library message about its argument, said of the option that set it.

    ``device 'mps': ...`` from the library becomes ``--steer-device 'mps': ...``; a message
    that names no argument gets the option in front.
    """
    if message.startswith(option):
        return message
    argument = option.removeprefix("--steer-").replace("-", "_")
    if message.startswith(argument + " "):
        return option + message[len(argument) :]
    return f"{option}: {message}"


# ---------------------------------------------------------------------------- output paths


def check_writable_file(path: Path | str, option: str) -> None:
    """``path`` can be created or overwritten as a file (its folders may not exist yet)."""
    target = Path(path).expanduser()
    if target.is_dir():
        raise PreflightError(f"{option} {path}: is a directory; give a file path inside it, e.g. {target / 'results.json'}")
    if target.exists():
        if not os.access(target, os.W_OK):
            raise PreflightError(f"{option} {path}: cannot write there (the file is read-only); choose a writable path")
        return
    _probe(target.parent, path, option)


def check_writable_dir(path: Path | str, option: str) -> None:
    """Files can be written in ``path`` (created when missing)."""
    target = Path(path).expanduser()
    if target.exists() and not target.is_dir():
        raise PreflightError(f"{option} {path}: is a file, not a directory; choose a directory path")
    _probe(target, path, option)


def _probe(folder: Path, path: Path | str, option: str) -> None:
    """Create and delete a probe file in ``folder`` or, when it does not exist yet, in its
    nearest existing parent (the folder that ``mkdir(parents=True)`` would write into)."""
    existing = folder.absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise PreflightError(f"{option} {path}: cannot write there ({existing} is a file, not a directory); choose a writable path")
    try:
        handle, probe = tempfile.mkstemp(dir=existing, prefix=".steer-probe-")
        os.close(handle)
        os.unlink(probe)
    except OSError as exc:
        raise PreflightError(
            f"{option} {path}: cannot write there (cannot create files in {existing}: {exc.strerror}); choose a writable path"
        ) from None


# ---------------------------------------------------------------------------- model configuration


def _config_value(config: Mapping[str, Any], *names: str) -> int | None:
    """The first of ``names`` set in ``config`` or in its ``text_config`` (multimodal models)."""
    for scope in (config, config.get("text_config") or {}):
        for name in names:
            value = scope.get(name)
            if isinstance(value, int) and not isinstance(value, bool):
                return value
    return None


def check_heads(heads_text: str, config: Mapping[str, Any] | None) -> None:
    """``--steer-heads`` parses, and with a model config, names layers and heads the model has."""

    option = "--steer-heads"
    num_layers = None if config is None else _config_value(config, "num_hidden_layers", "n_layer")
    num_heads = None if config is None else _config_value(config, "num_attention_heads", "n_head")
    try:
        head_config = parse_heads(heads_text, num_layers, argument=option)
        if num_layers is not None and num_heads is not None:
            resolve_heads(normalize_head_config(head_config), num_layers, num_heads)
    except ValueError as exc:
        message = str(exc)
        if not message.startswith(option):
            message = f"{option} {heads_text!r}: {message}"
        raise PreflightError(message) from None


def check_context(
    config: Mapping[str, Any] | None,
    max_new_tokens: int,
    longest_prompt_tokens: int,
    option: str = "--steer-max-new-tokens",
) -> None:
    """The longest (chat-templated) prompt plus ``max_new_tokens`` fit the model's context."""
    context = None if config is None else _config_value(config, "max_position_embeddings", "n_positions")
    if context is None:
        return
    if longest_prompt_tokens >= context:
        raise PreflightError(
            f"{option} {max_new_tokens}: the longest prompt alone has {longest_prompt_tokens} tokens, and the model's context "
            f"holds {context} (max_position_embeddings), so no new token fits; select shorter prompts or use a longer-context model"
        )
    room = context - longest_prompt_tokens
    if max_new_tokens > room:
        raise PreflightError(
            f"{option} {max_new_tokens}: the longest prompt has {longest_prompt_tokens} tokens and the model's context holds "
            f"{context} (max_position_embeddings), so {room} new tokens fit; use {option} {room} or less"
        )


# ---------------------------------------------------------------------------- device and dtype


def check_device(spec: str) -> None:
    """``--steer-device`` names a device torch has here (``auto`` and ``cpu`` always do, and torch is not asked)."""
    if device_type_without_torch(spec) == "cpu":
        return
    from pytest_steer.model.loading import ModelLoadError, resolve_device  # why: asks torch, which importing this module must not import

    try:
        resolve_device(spec)
    except ModelLoadError as exc:
        raise PreflightError(with_option("--steer-device", str(exc))) from None


def check_dtype(spec: str, device: str = "auto") -> None:
    """``--steer-dtype`` is auto or a supported dtype, and one the device can compute in (any on a CPU)."""
    if spec == "auto":  # always valid; deciding it means measuring the CPU, which the worker that loads the model does
        return
    from pytest_steer.model.loading import ModelLoadError, dtype_name, resolve_device, resolve_dtype  # why: as in check_device

    try:
        dtype_name(spec, "cpu")
    except ModelLoadError as exc:
        raise PreflightError(with_option("--steer-dtype", str(exc))) from None
    if device_type_without_torch(device) == "cpu":
        return
    try:
        device_type = resolve_device(device)
    except ModelLoadError:
        return  # check_device reports it
    try:
        resolve_dtype(spec, device_type)
    except ModelLoadError as exc:
        raise PreflightError(with_option("--steer-dtype", str(exc))) from None


# ---------------------------------------------------------------------------- baseline and gates


def check_baseline_file(path: Path | str, spec: RunSpec | None = None) -> None:
    """``--steer-baseline`` is a readable file that :func:`pytest_steer.stats.baseline.load_run` accepts and,
    given this run's ``spec``, was saved with the same dataset, generation, steering and quality settings."""
    from pytest_steer.stats.baseline import BaselineError, differences, load_run  # why: imports numpy, which importing this module must not

    try:
        saved = load_run(Path(path))
    except BaselineError as exc:
        raise PreflightError(f"--steer-baseline {exc}") from None
    if spec is None:
        return
    current = {  # the sections of RunSpec.fingerprint that a comparison needs equal
        "dataset": dict(spec.dataset),
        "generation": {**spec.decoding, "trials": spec.trials, "seed": spec.seed},
        "steering": spec.steering(),
        "quality": dict(spec.quality),
    }
    blocking = [d for d in differences(current, saved.run) if d.blocking]
    if blocking:
        details = "; ".join(_describe_difference(d) for d in blocking)
        raise PreflightError(
            f"--steer-baseline {path} was saved with other settings than this run's: {details}; run with the saved "
            "settings to compare with it, or save a baseline of these settings with --steer-save"
        )


_SETTING_OPTIONS = {
    ("dataset", "source"): "--steer-dataset",
    ("dataset", "split"): "--steer-dataset-split",
    ("dataset", "digest"): "the dataset file's contents",
    ("quality", "scorer"): "--steer-quality",
    ("quality", "transform"): "--steer-reward-transform",
    ("quality", "max_length"): "--steer-reward-max-length",
    ("quality", "revision"): "the reward model's weights (revision)",
}


def _describe_difference(difference: Difference) -> str:
    """``--steer-max-new-tokens 4 (this run: 5)``: the option, the saved value and this run's."""
    if difference.section == "steering":
        return f"config {difference.key} with {difference.saved!r} (this run: {difference.current!r})"
    option = _SETTING_OPTIONS.get((difference.section, difference.key), "--steer-" + difference.key.replace("_", "-"))
    return f"{option} {difference.saved!r} (this run: {difference.current!r})"


def check_sequential(settings: SteerSettings) -> None:
    """``--steer-sequential`` stops once the gates and fail-ifs are decided: it needs one at least."""
    if settings.sequential and not (settings.gate or settings.fail_if):
        raise PreflightError(
            "--steer-sequential stops generating once every gate and fail-if is decided, and this run has none; "
            "add a --steer-gate or --steer-fail-if, or drop --steer-sequential"
        )


def check_min_prompts(settings: SteerSettings, prompts: int) -> None:
    """The whole run's ``prompts`` (every shard's together) are enough for its gates and fail-ifs to be evaluated.

    A check rests on at most every prompt of the run, so with fewer than ``--steer-min-prompts``
    each one would fail as not evaluated, after every case was generated.
    """
    if not (settings.gate or settings.fail_if) or prompts >= settings.min_prompts:
        return
    more = "select more prompts (--steer-dataset and its filters)"
    if settings.limit == prompts:
        more = f"raise --steer-limit to {settings.min_prompts}"
    raise PreflightError(
        f"--steer-min-prompts {settings.min_prompts}: the gates and fail-ifs need at least {settings.min_prompts} evaluated prompts, "
        f"and this run selects {prompts}; {more}, or lower --steer-min-prompts to {prompts}"
    )


def check_quality_is_scored(settings: SteerSettings) -> None:
    """No gate, fail-if or comparison tolerance reads ``quality`` when ``--steer-quality none`` scores none."""
    from pytest_steer.stats.comparison import parse_compare_fail  # why: imports numpy, which importing this module must not

    if settings.quality != QUALITY_NONE:
        return
    fix = "score quality with --steer-quality fluency (or reward:<model>), or drop the quality check"
    for option, gates in (("--steer-gate", settings.gate), ("--steer-fail-if", settings.fail_if)):
        for text in gates:
            if parse_gate(text).metric == QUALITY_METRIC:
                raise PreflightError(f"{option} {text!r} reads quality, which --steer-quality {QUALITY_NONE} does not score; {fix}")
    if settings.baseline is not None and QUALITY_METRIC in parse_compare_fail(settings.compare_fail):
        raise PreflightError(
            f"--steer-compare-fail {settings.compare_fail!r} compares quality, which --steer-quality {QUALITY_NONE} does not score; {fix}"
        )


def check_gate_selectors(gates: Iterable[Gate | str], configs: Iterable[SteeringConfig], option: str = "--steer-gate") -> None:
    """Every gate (or fail-if, with ``option="--steer-fail-if"``) selects at least one config of this run.

    The gates' own selector matching decides, whatever the config names look like.
    """
    configs = list(configs)
    names = ", ".join(config.name for config in configs) or "none"
    for gate in gates:
        text = gate if isinstance(gate, str) else gate.text
        try:
            parsed = parse_gate(gate) if isinstance(gate, str) else gate
        except GateSyntaxError as exc:
            raise PreflightError(f"{option} {text!r}: {exc}") from None
        if parsed.delta and all(config.steered for config in configs):
            raise PreflightError(
                f"{option} {text!r} compares with the baseline, which this run does not have (configs: {names}); "
                "run the baseline too or drop '- baseline'"
            )
        selected = (parsed.selector.selects(c.name, c.alpha, baseline=not c.steered, delta=parsed.delta) for c in configs)
        if not any(selected):
            wanted, fix = _describe_selector(parsed.selector, parsed.delta)
            raise PreflightError(f"{option} {text!r} selects {wanted}, which this run does not have (configs: {names}); {fix}")


def _describe_selector(selector: Selector, delta: bool) -> tuple[str, str]:
    """What a selector asks for, and how to give it to the run."""
    if selector.kind == "alpha":
        return f"alpha {selector.value:g}", f"add --steer-alpha {selector.value:g} or change the selector"
    if selector.kind == "name":
        return f"config {selector.value!r}", "change the selector to one of those configs"
    what = "a steered config" if delta else "a config"
    return what, "add --steer-alpha A or drop the gate"


# ---------------------------------------------------------------------------- quality


def check_reward_model_offline(spec: str) -> None:
    """For ``--steer-quality reward:<hub id>``: the id is in the local cache or the hub is reachable.

    Reward models load through :func:`pytest_steer.model.loading.load_pretrained`, which asks the
    cache first and the hub only on a miss; this asks the same questions without loading.
    """

    if not spec.startswith(REWARD_PREFIX):
        return
    name = spec.removeprefix(REWARD_PREFIX)
    if not looks_like_hub_id(name):
        return  # a local path: the option parser has checked that it exists
    from huggingface_hub import try_to_load_from_cache

    repo, revision = split_revision(name)
    if isinstance(try_to_load_from_cache(repo, "config.json", revision=revision), str):
        return
    try:
        require_hub(repo, what="reward model", alternatives=reward_model_alternatives())
    except HubUnavailableError as exc:
        raise PreflightError(f"--steer-quality {spec}: {exc}") from None
