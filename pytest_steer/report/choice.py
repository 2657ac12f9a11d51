"""The path from a grid to the chosen value, in words: results.json's ``choice`` for the terminal, markdown and HTML."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def _number(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "n/a"
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def choice_summary(choice: Mapping[str, Any]) -> str:
    """One line: what was chosen, where, and on which prompts the report's numbers stand."""
    chosen = choice.get("chosen_config")
    what = f"{choice['method']} {choice['parameter']}=auto"
    selection, evaluation = len(choice.get("selection_prompts", ())), len(choice.get("evaluation_prompts", ()))
    parts = f"chosen on {selection} selection prompts; the table and checks read the other {evaluation} (evaluation) prompts only"
    if chosen is None:
        return f"choice: {what} chose none ({choice.get('reason')}); {parts}"
    return f"choice: {what} chose {choice['chosen']:g} ({chosen}); {parts}"


def choice_lines(choice: Mapping[str, Any]) -> list[str]:
    """The candidates, weakest first, as the selection prompts measured them, then why the chosen one."""
    error = choice.get("error")
    lines = [
        f"constraint (certified when its complement is shown at one-sided error {error:g}, weakest first, stopping at the "
        f"first not certified): {' and '.join(choice.get('constraint', ()))}",
        f"  {'value':>8}  {'constraint':>10}  {'bound':>8}  {'p':>7}  {choice.get('following', 'following')[:24]:>24}  verdict",
    ]
    for c in choice.get("candidates", ()):
        verdict = "certified" if c["certified"] else c.get("reason") or "not certified"
        if c["value"] == choice.get("chosen"):
            verdict += " <- chosen"
        p = "n/a" if c.get("p_value") is None else f"{c['p_value']:.3g}"
        lines.append(
            f"  {c['value']:>8g}  {_number(c.get('constraint_estimate'), True):>10}  {_number(c.get('constraint_bound'), True):>8}  "
            f"{p:>7}  {_number(c.get('following_estimate')):>24}  {verdict}"
        )
    lines.append(f"why: {choice.get('reason')}")
    return lines
