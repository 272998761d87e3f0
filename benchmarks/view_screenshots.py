"""Screenshots of a ``benchmarks.view`` report, one PNG per view, taken by headless Chromium.

    python -m benchmarks.view_screenshots report.html --out screens/

Writes ``episodes.png`` (the table and the first episode opened), ``branches.png``, ``pairs.png``
and ``results.png``; each is as tall as its page (up to ``--max-height`` pixels).
"""
from __future__ import annotations

import argparse
from collections.abc import Iterable
from pathlib import Path

from sotopia_env.errors import ConfigError

from .view_browser import console_errors, open_browser, page_url, wait_ready

VIEWS = ("episodes", "branches", "pairs", "results")


def screenshot_views(report: str | Path, out: str | Path, *, width: int = 1400, max_height: int = 4000) -> list[Path]:
    """Save one PNG per view of ``report`` in ``out``; returns their paths. A console error in the
    page is a ConfigError (the report is broken)."""
    if not Path(report).is_file():
        raise ConfigError(f"{report}: no such report (make one with python -m benchmarks.view)")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    driver = open_browser(width=width)
    saved = []
    try:
        for view in VIEWS:
            driver.get("about:blank")
            driver.get(page_url(report, view))
            wait_ready(driver)
            if view == "episodes":
                driver.execute_script("const row = document.querySelector('#episodes-table tbody tr');"
                                      "if (row) row.click(); window.scrollTo(0, 0);")
            height = driver.execute_script("return document.documentElement.scrollHeight")
            driver.set_window_size(width, min(max_height, max(600, int(height))))
            path = out / f"{view}.png"
            driver.save_screenshot(str(path))
            saved.append(path)
            errors = console_errors(driver)
            if errors:
                raise ConfigError(f"{report}: the {view} view logged errors: {errors[0]}")
    finally:
        driver.quit()
    return saved


def main(argv: Iterable[str] | None = None) -> list[Path]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.view_screenshots", description=__doc__.split("\n\n")[0])
    parser.add_argument("report", help="an HTML report written by python -m benchmarks.view")
    parser.add_argument("--out", default="screens", help="folder for the PNGs (default: screens)")
    parser.add_argument("--width", type=int, default=1400, help="window width in pixels")
    parser.add_argument("--max-height", type=int, default=4000, help="tallest screenshot in pixels")
    args = parser.parse_args(None if argv is None else list(argv))
    saved = screenshot_views(args.report, args.out, width=args.width, max_height=args.max_height)
    for path in saved:
        print(path)
    return saved


if __name__ == "__main__":
    from sotopia_env.cli import main_guard

    main_guard(main)
