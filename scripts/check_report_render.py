"""Render a pytest-steer report.html in headless Chromium and check what the browser made of it.

Usage: python scripts/check_report_render.py REPORT [--screenshot OUT.png] [--chromium PATH]

REPORT is a report.html or the report directory holding it. Checks, each printed:
the page parses into the expected elements after its script ran (trade-off table,
embedded figures, one case group per prompt and trial, no script element from the
data), and the screenshot is a real rendering (mostly light background, with dark text
and coloured figure pixels). Exit code 0 when every check passes, 1 when one fails,
2 when Chromium is not installed (Debian: apt-get install chromium).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--hide-scrollbars",
)
WINDOW = "1400,2200"
TIMEOUT_S = 120


def find_browser(explicit: str | None) -> str | None:
    if explicit:
        return explicit
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


def run_browser(browser: str, url: str, *mode: str) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory() as profile:
        command = [browser, *FLAGS, f"--user-data-dir={profile}", f"--window-size={WINDOW}", *mode, url]
        return subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S)


def dom_checks(source: str, dom: str) -> list[tuple[str, bool]]:
    groups = source.count('<details class="case"')
    return [
        ("trade-off table present", '<table class="tradeoff">' in dom),
        ("figures embedded as PNG data", dom.count('src="data:image/png;base64,') >= 2),
        (f"{groups} case group(s) in the DOM", dom.count('<details class="case"') == groups),
        ("the only script element is the page's own", len(re.findall(r"<script[\s>]", dom)) == 1),
        ("filter script ran (case count filled)", re.search(r'id="case-count">\d+<', dom) is not None or groups == 0),
    ]


def screenshot_checks(path: Path) -> list[tuple[str, bool]]:
    from matplotlib.image import imread

    if not path.is_file():
        return [("screenshot written", False)]
    pixels = imread(path)[..., :3]
    light = (pixels.min(axis=2) > 0.9).mean()
    dark = (pixels.max(axis=2) < 0.3).mean()
    coloured = ((pixels.max(axis=2) - pixels.min(axis=2)) > 0.3).mean()
    return [
        ("screenshot written", True),
        (f"mostly light page background ({light:.0%} of pixels)", light > 0.5),
        (f"dark text drawn ({dark:.2%} of pixels)", dark > 0.002),
        (f"coloured pixels from figures and badges ({coloured:.2%})", coloured > 0.002),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path, help="report.html or the directory holding it")
    parser.add_argument("--screenshot", type=Path, help="where to save the screenshot (default: beside the report)")
    parser.add_argument("--chromium", help="browser executable (default: chromium on PATH)")
    args = parser.parse_args(argv)

    page = args.report / "report.html" if args.report.is_dir() else args.report
    if not page.is_file():
        print(f"no report at {page}; pass a report.html or its directory", file=sys.stderr)
        return 1
    browser = find_browser(args.chromium)
    if browser is None:
        print("Chromium not found; install it (Debian: apt-get install chromium) or pass --chromium PATH", file=sys.stderr)
        return 2
    shot = (args.screenshot or page.with_name("report-screenshot.png")).resolve()
    url = page.resolve().as_uri()

    dom = run_browser(browser, url, "--dump-dom")
    rendered = run_browser(browser, url, f"--screenshot={shot}")
    if dom.returncode != 0 or rendered.returncode != 0:
        print(f"Chromium failed:\n{dom.stderr[-2000:]}\n{rendered.stderr[-2000:]}", file=sys.stderr)
        return 1
    checks = dom_checks(page.read_text(encoding="utf-8"), dom.stdout) + screenshot_checks(shot)
    for label, ok in checks:
        print(f"{'ok  ' if ok else 'FAIL'} {label}")
    print(f"screenshot: {shot}")
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
