"""``python -m pytest_steer``: rebuild reports from saved runs without a model, and profile PASTA's heads.

``report DIR [--out DIR]``
    Regenerate every output (results.json, cases.jsonl, summary.csv, figures, report.html)
    from a saved report directory (or a results.json file with cases.jsonl beside it).
``merge OUT_DIR DIR1 DIR2 ... [--gate EXPR ...] [--fail-if EXPR ...] [--gate-correction M] [--max-errors N] [--min-prompts N]``
    Merge the cases of several runs of one evaluation (e.g. shards on several machines),
    re-aggregate, judge the gates and fail-ifs as one family (as a run does) and write
    every output to OUT_DIR. Exit code 1 when a check fails. ``--sequential`` replays the
    cases in the order a sequential run generates them and reports where it would have
    stopped, with its verdicts, over the prompts it would have generated. Runs that pytest's
    selection left partial stay partial: a check reading a partly run config is not decided,
    as in the run. Runs whose sequential looks stopped early are refused.

``profile OUT_DIR [--alpha A] [--top-k K] [--layers L] [--metric M] [--block N] [--share F] [-- PYTEST ARGS]``
    Choose the heads PASTA steers by model profiling: steer each layer alone, then each head of
    the best layers, on a seeded selection part of the prompts, dropping clear losers after each
    block (:mod:`pytest_steer.run.profiling`). Writes heads.json (pass it to ``--steer-heads``),
    results.json's ``profile``, profile.png, and the prompts: selection.jsonl and evaluation.jsonl
    (report the chosen heads on the latter). Arguments after ``--`` go to every steer run.

``report`` and ``merge`` print the trade-off table; ``--summary-md PATH`` also writes the markdown summary.
``--version`` prints the installed pytest-steer's version.
Exit codes: 0 done (checks not decided included, as in a partial run), 1 a gate failed,
2 bad arguments or inputs that cannot be used.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from pytest_steer.plan.option_values import metric, positive_float, positive_int, share, strength
from pytest_steer.plan.options import OPTIONS, Option
from pytest_steer.report.files import REPORT_HTML, write_report
from pytest_steer.report.markdown import write_markdown
from pytest_steer.report.table import describe_run
from pytest_steer.report.terminal import check_lines, checks_count_line, render_table, undecided_lines
from pytest_steer.run.profiling import ProfileError, ProfileSettings
from pytest_steer.run.results import RunResults
from pytest_steer.stats.gate_language import Gate, parse_checks, parse_gate
from pytest_steer.stats.gates import evaluate_gates
from pytest_steer.stats.sequential import DEFAULT_BLOCK_SIZE, DEFAULT_QUALITY_CLIP, SequentialSettings, replay
from pytest_steer.steering.pasta.heads import parse_heads

EXIT_OK, EXIT_GATE_FAILED, EXIT_BAD_INPUT = 0, 1, 2


def _plugin_option(name: str) -> Option:
    """The plugin's own option, so ``merge`` parses and defaults gate settings exactly like a run."""
    return next(option for option in OPTIONS if option.name == name)


def _argument_type(parse_value: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse type from one of the plugin's option parsers: the same values, the same messages."""

    def parse(text: str) -> Any:
        try:
            return parse_value(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None  # the parsers quote the value themselves

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pytest_steer", description="Rebuild pytest-steer reports from saved runs.")
    parser.add_argument("--version", action="version", version=package_version())
    commands = parser.add_subparsers(dest="command", required=True)

    report = commands.add_parser("report", help="regenerate every output of a saved report directory")
    report.add_argument("source", type=Path, metavar="DIR", help="report directory (or its results.json)")
    report.add_argument("--out", type=Path, metavar="DIR", help="write the outputs here instead of DIR")
    report.add_argument("--summary-md", type=Path, metavar="PATH", help="also write a markdown summary here")

    merge = commands.add_parser("merge", help="merge the cases of several runs and evaluate gates on the whole")
    merge.add_argument("out", type=Path, metavar="OUT_DIR", help="directory for the merged report")
    merge.add_argument(
        "sources", type=Path, nargs="+", metavar="DIR", help="report directories (or standalone results.json files) of the runs to merge"
    )
    for name in ("gate", "fail_if"):
        option = _plugin_option(name)
        merge.add_argument(
            "--" + name.replace("_", "-"), action="append", default=[], metavar="EXPR", help=f"{option.help} (as {option.cli})"
        )
    for name in ("gate_correction", "max_errors", "min_prompts"):
        option = _plugin_option(name)
        merge.add_argument(
            "--" + name.replace("_", "-"),
            type=_argument_type(option.parse),
            default=option.default,
            metavar=option.metavar or "N",
            help=f"{option.help} (as {option.cli}); default {option.default}",
        )
    merge.add_argument(
        "--sequential",
        action="store_true",
        help="replay the cases in the order a sequential run generates them and report where it would stop and its verdicts",
    )
    merge.add_argument(
        "--sequential-block",
        type=_argument_type(positive_int),
        default=DEFAULT_BLOCK_SIZE,
        metavar="N",
        help=f"prompts per look of --sequential; default {DEFAULT_BLOCK_SIZE}",
    )
    merge.add_argument(
        "--sequential-quality-clip",
        type=_argument_type(positive_float),
        default=DEFAULT_QUALITY_CLIP,
        metavar="R",
        help=f"--sequential clips per-prompt quality values to the threshold ± R; default {DEFAULT_QUALITY_CLIP:g}",
    )
    merge.add_argument("--summary-md", type=Path, metavar="PATH", help="also write a markdown summary here")

    profile = commands.add_parser(
        "profile",
        help="choose the heads PASTA steers: each layer, then each head of the best layers",
        epilog="arguments after -- go to every steer run, e.g. -- --steer-max-new-tokens 32 -n 2",
    )
    profile.add_argument("out", type=Path, metavar="OUT_DIR", help="directory for heads.json, results.json, profile.png and the prompts")
    defaults = ProfileSettings(Path())
    profile.add_argument("--alpha", type=_argument_type(strength), default=defaults.alpha, help="PASTA's strength while profiling")
    profile.add_argument("--top-k", type=_argument_type(positive_int), default=defaults.top_k, metavar="K", help="heads in the chosen set")
    profile.add_argument(
        "--layers",
        type=_argument_type(positive_int),
        default=defaults.layers,
        metavar="L",
        help="best layers whose heads are profiled one by one",
    )
    profile.add_argument(
        "--candidates",
        type=_argument_type(_layer_list),
        default=None,
        metavar="LAYERS",
        help="the layers stage 1 profiles, e.g. 8-23 or 0-3,7; default every layer",
    )
    profile.add_argument(
        "--metric", type=_argument_type(metric), default=defaults.metric, help="the following metric a head's lift is measured in"
    )
    profile.add_argument(
        "--block",
        type=_argument_type(positive_int),
        default=defaults.block,
        metavar="N",
        help="prompts per look (clear losers are dropped after each)",
    )
    profile.add_argument(
        "--share",
        type=_argument_type(share),
        default=defaults.share,
        metavar="F",
        help="share of the prompts profiling reads; the rest report",
    )
    profile.add_argument(
        "--seed", type=_argument_type(positive_int), default=defaults.seed, help="seed of the split, the prompt order and the runs"
    )
    profile.add_argument("--dataset", default=defaults.dataset, metavar="SOURCE", help="prompts, as --steer-dataset takes them")
    profile.add_argument(
        "--limit", type=_argument_type(positive_int), default=None, metavar="N", help="use the first N prompts of the dataset"
    )
    return parser


def package_version() -> str:
    """``pytest-steer X.Y.Z``, as the installed distribution says."""
    from importlib import metadata

    try:
        return f"pytest-steer {metadata.version('pytest-steer')}"
    except metadata.PackageNotFoundError:
        return "pytest-steer (version unknown: the package is not installed; pip install -e . installs it)"


def _print_results(results: RunResults, written: Sequence[Path]) -> None:
    width = max(60, shutil.get_terminal_size((100, 24)).columns)
    for line in describe_run(results):
        print(line)
    print("mean [95% CI over prompts]; Δ: paired difference from the baseline over the same prompts\n")
    for line in render_table(results, width):
        print(line)
    count = checks_count_line(results)
    if count is not None:
        print(f"\n{count}")
    for line, _ in check_lines(results):
        print(f"  {line}")
    for line in undecided_lines(results):
        print(f"  {line}")
    if written:
        print(f"\nwrote {written[0]}")
        for path in written[1:]:
            print(f"      {path}")


def _report(args: argparse.Namespace) -> int:
    from pytest_steer.report.saved import load_report, results_path

    results = load_report(args.source)
    if not results.records:
        print(f"note: no cases.jsonl beside {results_path(args.source)}; the report has no case list", file=sys.stderr)
    out = args.out or results_path(args.source).parent
    return _write(results, out, args.summary_md, exit_on_gates=False)


def _merge(args: argparse.Namespace) -> int:
    from pytest_steer.report.merge import decide_selected, merge_reports

    gates = [parse_gate(text) for text in args.gate]  # syntax errors stop before any reading
    fail_ifs = [parse_gate(text) for text in args.fail_if]
    if args.sequential and not (gates or fail_ifs):
        raise ValueError("--sequential decides when to stop from the gates and fail-ifs; pass at least one --gate or --fail-if")
    results = merge_reports(args.sources)
    partial = results.selection is not None and results.selection.partial
    if args.sequential and not partial:
        return _write_sequential(results, gates, fail_ifs, args)
    gated = evaluate_gates(
        gates,
        results.aggregates,
        fail_ifs=fail_ifs,
        correction=args.gate_correction,
        max_errors=args.max_errors,
        min_prompts=args.min_prompts,
    )
    decided, selection = decide_selected(results, gated, parse_checks(gates, fail_ifs))
    merged = replace(results, gates=decided, selection=selection, min_prompts=args.min_prompts)
    code = _write(merged, args.out, args.summary_md, exit_on_gates=True)
    if args.sequential:  # as a partial run, which takes no look: every selected case runs
        print(
            "sequential replay: none: the runs ran only part of their cases, and a partial run takes no look; the checks on "
            "configs that ran every case are decided by the fixed design, the others are not decided"
        )
    return code


def _write_sequential(results: RunResults, gates: list[Gate], fail_ifs: list[Gate], args: argparse.Namespace) -> int:
    seed = int((results.run.get("generation") or {}).get("seed", 0))
    settings = SequentialSettings(seed=seed, block_size=args.sequential_block, quality_clip=args.sequential_quality_clip)
    _, outcome = replay(
        results.records,
        gates,
        fail_ifs,
        settings,
        max_errors=args.max_errors,
        min_prompts=args.min_prompts,
        correction=args.gate_correction,
    )
    used = set(outcome.prompts_used)
    replayed = RunResults.from_records(
        results.run,
        [r for r in results.records if str(r["key"]) in used],
        seed=seed,
        gates=outcome.results,
        n_lost=results.n_lost,
        selection=results.selection,
        sequential=outcome.to_dict(),
        min_prompts=args.min_prompts,
    )
    code = _write(replayed, args.out, args.summary_md, exit_on_gates=True)
    unevaluated = sum(result.shown is None for result in outcome.results)
    where = "no check open" if outcome.stopped_early else "checks still open at the budget"
    if unevaluated:
        where += f" ({unevaluated} check(s) could not be evaluated and fail)"
    print(
        f"sequential replay: stops after look {len(outcome.looks)} with {where}: {len(used)} of {outcome.prompts_total} prompts, "
        f"{len(replayed.records)} of {len(results.records)} cases ({len(replayed.records) / max(len(results.records), 1):.0%})"
    )
    return code


def _write(results: RunResults, out: Path, summary_md: Path | None, *, exit_on_gates: bool) -> int:
    written = write_report(results, out)
    if summary_md is not None:
        written.append(write_markdown(results, summary_md, report=out / REPORT_HTML))
    _print_results(results, written)
    failed = any(not g.passed for g in results.gates) or any(not c.passed for c in results.comparisons)
    return EXIT_GATE_FAILED if exit_on_gates and failed else EXIT_OK


def _layer_list(text: str) -> tuple[int, ...]:
    layers = parse_heads(text, argument="--candidates")
    if not isinstance(layers, list):
        raise ValueError(f"--candidates {text!r}: give layers like 8-23 or 0-3,7 (stage 2 picks the heads)")
    return tuple(dict.fromkeys(layers))


def _profile(args: argparse.Namespace) -> int:
    from pytest_steer.report.plotting import png_bytes  # why: imports matplotlib; report and merge may not draw
    from pytest_steer.report.profile_figure import profile_figure
    from pytest_steer.run.profiling import profile_heads
    from pytest_steer.store.atomic import write_bytes, write_text

    given = ("alpha", "top_k", "layers", "candidates", "metric", "block", "share", "seed", "dataset", "limit")
    settings = ProfileSettings(args.out, **{name: getattr(args, name) for name in given}, pytest_args=args.pytest_args)
    started = time.time()
    profile = profile_heads(settings)
    profile["seconds"] = round(time.time() - started, 1)
    write_text(args.out / "results.json", json.dumps({"profile": profile}, indent=2) + "\n")
    write_bytes(args.out / "profile.png", png_bytes(profile_figure(profile)))
    layers, heads = profile["stages"]
    best = sorted((c for c in layers["candidates"] if c["lift"] is not None), key=lambda c: -c["lift"])[: args.layers]
    prompts = len(profile["selection_prompts"])
    print(
        f"profiled {profile['num_layers']} layers and {len(heads['candidates'])} heads on {prompts} prompts in {profile['seconds']:.0f} s"
    )
    print("best layers: " + ", ".join(f"{c['heads']} (lift {c['lift']:+.3f})" for c in best))
    print(f"heads: {json.dumps(profile['heads'])}")
    print(f"wrote {args.out / 'heads.json'}, results.json, profile.png")
    print(
        f"report them on the held-out prompts: pytest ... --steer-dataset {args.out / 'evaluation.jsonl'} "
        f"--steer-method pasta:alpha={args.alpha:g},heads={args.out / 'heads.json'}"
    )
    return EXIT_OK


COMMANDS = {"report": _report, "merge": _merge, "profile": _profile}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    cut = argv.index("--") if "--" in argv else len(argv)  # what follows "--" goes to pytest (profile)
    args = parser.parse_args(argv[:cut])
    args.pytest_args = tuple(argv[cut + 1 :])
    try:
        return COMMANDS[args.command](args)
    except ProfileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (OSError, ValueError) as exc:  # unreadable, malformed or incompatible inputs, bad gates
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
