"""Command-line and ini options, parsed once into a frozen :class:`SteerSettings`.

Every option exists twice: ``--steer-NAME`` on the command line and ``steer_NAME`` in the
ini file (pytest.ini, pyproject.toml ``[tool.pytest.ini_options]``, tox.ini). The command
line wins. Values are validated here, so bad input stops pytest before anything runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import pytest

from pytest_steer.plan import option_values as values
from pytest_steer.plan.choice import auto_parameter
from pytest_steer.plan.data import HIGHLIGHTS
from pytest_steer.plan.method_spec import parse_method
from pytest_steer.plan.option_values import (
    CASE_MODES,
    COMPILE_MODES,
    QUALITY_FLUENCY,
    QUALITY_NONE,
    REFERENCE_REWARD_MODEL,
    REWARD_PREFIX,
    SCALE_POSITIONS,
    SEED_MAX,
    TOP_P_MIN,
)
from pytest_steer.plan.sharding import Shard, parse_shard
from pytest_steer.stats.levels import CORRECTIONS


@dataclass(frozen=True)
class SteerSettings:
    """Every option's value, by the option's name, and pytest's rootdir; a field's default is its option's default."""

    model: str = "embedded"
    device: str = "auto"
    dtype: str = "auto"
    attn_implementation: str = "eager"
    linear: str = "auto"
    dataset: str = "builtin"
    dataset_split: str = "train"
    single_instruction: bool = False
    instruction_ids: tuple[str, ...] = ()
    per_instruction: int | None = None
    sample_seed: int = 0
    limit: int | None = None
    highlight: str = "auto"
    alpha: tuple[float | str, ...] = ()  # "auto": chosen from the grid
    method: tuple[tuple[str, tuple[tuple[str, Any], ...]], ...] = ()  # values are text, or a Sweep of texts
    heads: str | None = None
    scale_position: str = "include"
    trials: int = 1
    seed: int = 0
    max_new_tokens: int = 128
    greedy: bool = False
    temperature: float = 0.7
    top_p: float = 1.0
    compile: str | None = None
    batch_size: int | None = None
    quality: str = QUALITY_FLUENCY
    reward_transform: str = "identity"
    reward_batch_size: int = 8
    reward_max_length: int = 1024
    case_mode: str = "record"
    json: Path | None = None
    gate: tuple[str, ...] = ()
    fail_if: tuple[str, ...] = ()
    gate_correction: str = "holm"
    sequential: bool = False
    sequential_block: int | None = None  # auto: a block fills one generation batch
    sequential_quality_clip: float = 1.0
    max_errors: float = 0
    min_prompts: int = 10
    grid: tuple[float, ...] = (2.0, 5.0, 10.0, 15.0, 20.0, 30.0)
    selection_share: float = 0.5
    selection_data: str | None = None
    choose_by: str = "strict_prompt_accuracy"
    save: Path | None = None
    baseline: Path | None = None
    compare_fail: str = "0"
    report_dir: Path | None = None
    summary_md: Path | None = None
    cache_dir: Path | None = None
    no_cache: bool = False
    shard: Shard | None = None
    rootdir: Path = field(default=Path("."), compare=False)

    @property
    def reward_model(self) -> str | None:
        """The reward model id or path of ``reward:<...>`` quality scoring, else None."""
        return self.quality.removeprefix(REWARD_PREFIX) if self.quality.startswith(REWARD_PREFIX) else None


SETTING_DEFAULTS: dict[str, Any] = {f.name: f.default for f in fields(SteerSettings)}


@dataclass(frozen=True)
class Option:
    """One setting: its CLI/ini names, parser, default and help."""

    name: str
    help: str
    parse: Callable[[str], Any] = str
    flag: bool = False
    repeatable: bool = False
    metavar: str | None = None
    ini_name: str | None = None  # when the ini name is not steer_<name>
    comma_separated: bool = True  # a repeatable option's values may also be given as a,b,c

    @property
    def default(self) -> Any:
        """The value when neither the command line nor the ini file sets it."""
        return SETTING_DEFAULTS[self.name]

    @property
    def cli(self) -> str:
        return "--steer-" + self.name.replace("_", "-")

    @property
    def ini(self) -> str:
        return self.ini_name or "steer_" + self.name


OPTIONS: tuple[Option, ...] = (
    Option(
        "model",
        "model under test: 'embedded' (SmolLM2-135M-Instruct, offline), a Hugging Face id (org/name[@rev]) or a local path",
        metavar="ID|PATH",
    ),
    Option("device", "torch device: auto (one CUDA device per xdist worker, else CPU), cpu, cuda, cuda:N, mps"),
    Option("dtype", "weights dtype: auto (bfloat16 on a GPU, or a CPU where it measures 1.5x float32), float32, bfloat16, float16"),
    Option(
        "attn_implementation", "attention kernel: eager (default, as in the reference study) or sdpa", parse=values.choice("eager", "sdpa")
    ),
    Option(
        "linear",
        "a CPU's linear layers: auto (on weights packed once where this machine measures that 1.1x faster), packed or plain",
        parse=values.choice("auto", "packed", "plain"),
    ),
    Option(
        "dataset",
        "prompts: 'builtin' (the built-in sample suite), a hub id (ibm-research/Split-IFEval, google/IFEval) or a .jsonl/.json/.parquet/.csv file",
        metavar="SOURCE",
    ),
    Option("dataset_split", "split of a hub dataset"),
    Option("single_instruction", "keep only prompts with exactly one instruction", flag=True),
    Option(
        "instruction_ids",
        "keep prompts having any of these IFEval instruction ids (comma-separated; an unknown id is refused, with the nearest ones)",
        parse=values.instruction_ids,
        metavar="IDS",
    ),
    Option(
        "per_instruction", "sample N prompts per instruction id (seeded by --steer-sample-seed)", parse=values.positive_int, metavar="N"
    ),
    Option("sample_seed", f"seed of the per-instruction sampling, 0 to {SEED_MAX}", parse=values.seed),
    Option("limit", "keep the first N selected prompts", parse=values.positive_int, metavar="N"),
    Option(
        "highlight",
        "spans the steering methods emphasize: auto (the 'instructions' column when present, else the last sentence), instructions, last-sentence, prompt",
        parse=values.choice(*HIGHLIGHTS),
    ),
    Option(
        "alpha",
        "PASTA strength; one steered config per value, besides the unsteered baseline (repeatable or comma-separated); auto: the strongest --steer-grid value certified to meet the --steer-fail-if constraint on the selection prompts (docs/choosing.md)",
        parse=values.alpha,
        repeatable=True,
        metavar="ALPHA",
    ),
    Option(
        "method",
        "another steering method beside the baseline and PASTA: emphasis (marks the highlights in the prompt), actadd (adds a steering vector to one layer's output, e.g. actadd:layer=15,coeff=8), or a method registered by the pytest_steer_methods hook; NAME or NAME:key=value,... (repeatable; key=1,2,4 runs one config per value)",
        parse=parse_method,
        repeatable=True,
        metavar="METHOD",
        comma_separated=False,
    ),
    Option(
        "heads",
        "steered heads: layers '8-23', '0-3,7', JSON '{\"8\": [0, 1]}', or a heads.json that python -m pytest_steer profile wrote; default: the middle layers of any model (8-23 of 28)",
        parse=values.heads,
        metavar="HEADS",
    ),
    Option("scale_position", "PASTA scale position: include, exclude or generation", parse=values.choice(*SCALE_POSITIONS)),
    Option("trials", "sampled responses per prompt and config", parse=values.positive_int),
    Option("seed", f"base seed, 0 to {SEED_MAX}; each case's seed derives from (seed, prompt key, trial)", parse=values.seed),
    Option("max_new_tokens", "tokens generated per response", parse=values.positive_int),
    Option("greedy", "greedy decoding instead of sampling", flag=True),
    Option("temperature", "sampling temperature", parse=values.positive_float),
    Option(
        "top_p",
        f"nucleus sampling threshold, from {TOP_P_MIN:g} to 1 (for the most likely token alone use --steer-greedy)",
        parse=values.top_p,
    ),
    Option(
        "compile",
        "compile the decode step with torch.compile in this mode (default, reduce-overhead: CUDA graphs, max-autotune, max-autotune-no-cudagraphs), on a fixed-shape KV cache; off when not given (see docs/scaling.md)",
        parse=values.choice(*COMPILE_MODES),
        metavar="MODE",
    ),
    Option(
        "batch_size",
        "generation batch size: auto (64 rows; on a GPU fewer when its free memory needs) or N",
        parse=values.positive_int_or_auto,
    ),
    Option(
        "quality",
        f"quality scorer: {QUALITY_FLUENCY} (mean log-likelihood per response token under the unsteered model, nats), {QUALITY_NONE}, or {REWARD_PREFIX}<id or path> (a sequence-classification reward model, e.g. {REWARD_PREFIX}{REFERENCE_REWARD_MODEL})",
        parse=values.quality,
        metavar="SCORER",
    ),
    Option(
        "reward_transform",
        "reward head output to score: identity, sigmoid, or softmax:<label> / log_softmax:<label> (label index or name) for multi-label heads",
        parse=values.reward_transform,
        metavar="TRANSFORM",
    ),
    Option("reward_batch_size", "(prompt, response) pairs per reward-model forward pass", parse=values.positive_int, metavar="N"),
    Option("reward_max_length", "reward-model input tokens per pair; longer pairs are truncated", parse=values.positive_int, metavar="N"),
    Option(
        "case_mode",
        "record: every case records its verdicts and passes (misses are shown apart); strict: a missed instruction fails the case, in any test that requests steer_case",
        parse=values.choice(*CASE_MODES),
    ),
    Option("json", "also write results.json to this path", parse=values.path, metavar="PATH"),
    Option(
        "gate",
        "CI gate: passes when the data shows EXPR, e.g. 'alpha=10: strict_prompt_accuracy - baseline > -0.1' (steering at alpha 10 is shown to lose under 0.1) (repeatable; see docs/gates.md)",
        parse=values.gate,
        repeatable=True,
        metavar="EXPR",
        ini_name="steer_gates",
    ),
    Option(
        "fail_if",
        "CI check: fails when the data shows EXPR, e.g. 'alpha=10: strict_prompt_accuracy - baseline < 0' (fails only when steering is shown to hurt) (repeatable; see docs/gates.md)",
        parse=values.gate,
        repeatable=True,
        metavar="EXPR",
        ini_name="steer_fail_if",
    ),
    Option(
        "gate_correction",
        "family-wise error control over all gates and fail-ifs of the run: holm (Holm's step-down) or none (each check at the run's level)",
        parse=values.choice(*CORRECTIONS),
        metavar="METHOD",
    ),
    Option(
        "sequential",
        "generate the prompts in a seeded random order, in blocks, and stop once every gate and fail-if is decided (anytime-valid, at the run's error level; see docs/gates.md); cases never generated are skipped",
        flag=True,
    ),
    Option(
        "sequential_block",
        "prompts per block of --steer-sequential: the checks are looked at after each block, and no generation batch spans two blocks; auto (default): as many prompts as fill one batch with all their configs and trials, at least 8 (docs/gates.md)",
        parse=values.positive_int_or_auto,
    ),
    Option(
        "sequential_quality_clip",
        "--steer-sequential clips each prompt's quality value to the check's threshold ± R (a bounded test needs bounded values; in the quality scorer's units, nats for fluency)",
        parse=values.positive_float,
        metavar="R",
    ),
    Option(
        "max_errors",
        "error budget of the gates: a count, or a fraction of a config's cases when below 1",
        parse=values.error_budget,
        metavar="N",
    ),
    Option(
        "min_prompts",
        "gates and fail-ifs refuse to pass on fewer evaluated prompts than this, and the reports give no interval to a change per instruction id over fewer (not estimable)",
        parse=values.positive_int,
        metavar="N",
    ),
    Option(
        "grid",
        "the values auto chooses from (--steer-alpha auto, --steer-method NAME:PARAM=auto), tested weakest first",
        parse=values.strength,
        repeatable=True,
        metavar="VALUES",
    ),
    Option("selection_share", "the share of the prompts that choose an auto value; the others report it", parse=values.share, metavar="F"),
    Option(
        "selection_data",
        "choose an auto value on these prompts (a --steer-dataset source) and report it on all of --steer-dataset",
        metavar="SOURCE",
    ),
    Option("choose_by", "the metric the certified auto values are ranked by", parse=values.metric, metavar="METRIC"),
    Option("save", "save this run (per-prompt results) as a baseline file for --steer-baseline", parse=values.path, metavar="PATH"),
    Option("baseline", "compare this run with a saved baseline file, paired per prompt", parse=values.path, metavar="PATH"),
    Option(
        "compare_fail",
        "regression tolerances against --steer-baseline: 'metric:tol,...', or one number for every accuracy metric",
        parse=values.compare_fail,
        metavar="SPEC",
    ),
    Option(
        "report_dir",
        "directory of the trade-off report (report.html, results.json, cases.jsonl, summary.csv, figures); default: steer-report in pytest's cache dir",
        parse=values.path,
        metavar="DIR",
    ),
    Option(
        "summary_md", 'also write a short markdown summary to this path, e.g. "$GITHUB_STEP_SUMMARY"', parse=values.path, metavar="PATH"
    ),
    Option(
        "cache_dir", "directory of the response cache; default: steer-responses in pytest's cache dir", parse=values.path, metavar="DIR"
    ),
    Option("no_cache", "neither read nor write cached responses: generate every case", flag=True),
    Option(
        "shard",
        "run shard i of n (1-based) of the selected prompts, e.g. 2/4; merge the shards with python -m pytest_steer merge",
        parse=parse_shard,
        metavar="I/N",
    ),
)


def add_options(parser: pytest.Parser) -> None:
    group = parser.getgroup("steer", "pytest-steer: LLM steering evaluation")
    for option in OPTIONS:
        action = "store_true" if option.flag else "append" if option.repeatable else "store"
        extra = {} if option.flag else {"metavar": option.metavar or option.name.upper()}
        group.addoption(option.cli, action=action, dest=f"steer_{option.name}", default=None, help=option.help, **extra)
        ini_type = "bool" if option.flag else "linelist" if option.repeatable else "string"
        parser.addini(option.ini, option.help, type=ini_type, default=None)


def _raw_values(config: pytest.Config, option: Option) -> list[Any] | None:
    cli = config.getoption(f"steer_{option.name}")
    if cli not in (None, []):
        return cli if option.repeatable else [cli]
    try:
        ini = config.getini(option.ini)
    except (ValueError, pytest.UsageError) as exc:  # pytest's own conversion of a bool ini value (pytest 9 raises UsageError)
        raise ValueError(f"{exc}; expected true or false (yes/no, on/off, 1/0 work too)") from None
    if ini in (None, [], ""):
        return None
    return ini if option.repeatable else [ini]


def _parse_values(option: Option, raw: list[Any]) -> Any:
    if option.flag:
        return raw[0] is True  # the CLI stores True; pytest converts the ini text to a bool
    if option.repeatable:
        texts = [str(text) for text in raw]
        if option.comma_separated:
            texts = [part for text in texts for part in text.split(",")]
        parts = [part.strip() for part in texts if part.strip()]
        return tuple(dict.fromkeys(option.parse(part) for part in parts))
    return option.parse(str(raw[0]))


def settings_from_config(config: pytest.Config) -> SteerSettings:
    """Parse every option; raise ``pytest.UsageError`` naming the option and the fix."""
    values: dict[str, Any] = {}
    for option in OPTIONS:
        try:
            raw = _raw_values(config, option)
            if raw is not None:
                values[option.name] = _parse_values(option, raw)
        except (ValueError, TypeError) as exc:  # TypeError: a toml ini value of the wrong type
            raise pytest.UsageError(f"{option.cli} (ini {option.ini}): {exc}") from None
    settings = SteerSettings(**values, rootdir=Path(config.rootpath))
    try:
        auto_parameter(settings.alpha, settings.method)
    except ValueError as exc:
        raise pytest.UsageError(f"--steer-alpha/--steer-method: {exc}") from None
    return settings
