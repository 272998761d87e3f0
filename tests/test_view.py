"""benchmarks.view: the HTML report of a run made by the embedded model, opened in headless Chromium.

The run is ``tests/data/embedded_run``: the ``sdpo.pairs`` pipeline on the embedded model (agent,
partner and judge), written by

    python -m sdpo.pairs out_dir=/tmp/vrun collect.max_tasks=1 collect.interlocutors=[self] \\
        collect.max_turns=4 models.max_new_tokens=10 sample.n=2 negatives.goal_below=10.5 \\
        write.kinds=[sdpo,dpo,preferred_sft] device=cpu

(its config.yaml is kept beside it); with ``sdpo/data/demo_pairs.jsonl`` (pairs of the embedded
model too) and a results folder computed here from the run's episodes by ``benchmarks.results``.
One reply gets a ``<script>`` and an ``<img onerror>`` injected before the report is built.

Without Chromium (``apt-get install -y chromium chromium-driver``) the browser tests skip, unless
SOTOPIA_BROWSER_REQUIRED is set (CI sets it): then they fail.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import plots, results
from benchmarks.view import read_sources, script_json, write_report
from benchmarks.view_browser import (
    INSTALL_HINT,
    console_errors,
    find_chromium,
    open_browser,
    page_url,
    wait_ready,
)
from sotopia_env.episode import EpisodeRecord, read_jsonl, rewrite_jsonl
from sotopia_env.errors import ConfigError
from sotopia_env.render import background

REPO = Path(__file__).resolve().parents[1]
RUN = REPO / "tests" / "data" / "embedded_run"
DEMO_PAIRS = REPO / "sdpo" / "data" / "demo_pairs.jsonl"
INJECTED = '<script>window.__injected = 1</script><img src="x" onerror="window.__injected = 2">'


def lines(path: Path) -> list[dict]:
    return [obj for _, obj in read_jsonl(path)]


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict:
    """The run copied, one reply given markup, a results folder beside it, and the report of all three."""
    root = tmp_path_factory.mktemp("view")
    run = root / "run"
    shutil.copytree(RUN, run)
    episodes = lines(run / "episodes.jsonl")
    episodes[0]["turns"][1]["argument"] += INJECTED
    rewrite_jsonl(run / "episodes.jsonl", episodes)
    res = root / "results"
    res.mkdir()
    doc = results.results_document([EpisodeRecord.from_dict(e) for e in episodes])
    results.write_results(doc, res / "results.json", res / "results.md")
    plots.plot_dimensions(results.summaries_from_document(doc), res / "scores.png")
    plots.plot_output_length(doc["output_length_per_turn"], res / "output_length.png")
    out = root / "report.html"
    shown = write_report([str(run), str(res), str(DEMO_PAIRS)], out)
    return {"path": out, "run": run, "results": doc, "shown": shown, "episodes": episodes,
            "branches": lines(run / "branches.jsonl"),
            "pairs": [p for f in [*sorted(run.glob("pairs_*.jsonl")), DEMO_PAIRS] for p in lines(f)]}


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium for the module."""
    if find_chromium() is None:
        if os.environ.get("SOTOPIA_BROWSER_REQUIRED"):
            pytest.fail(f"SOTOPIA_BROWSER_REQUIRED is set but Chromium or chromedriver is missing: {INSTALL_HINT}")
        pytest.skip(f"Chromium or chromedriver is not installed ({INSTALL_HINT}); "
                    "SOTOPIA_BROWSER_REQUIRED=1 makes this a failure")
    try:
        import selenium  # noqa: F401
    except ImportError:
        if os.environ.get("SOTOPIA_BROWSER_REQUIRED"):
            pytest.fail('SOTOPIA_BROWSER_REQUIRED is set but selenium is missing: pip install -e ".[test]"')
        pytest.skip('selenium is not installed (pip install -e ".[test]")')
    driver = open_browser()
    yield driver
    driver.quit()


def open_view(driver, report: dict, view: str):
    """A fresh load of the report at ``view`` (a reload, so each test starts from the same page)."""
    driver.get("about:blank")
    driver.get(page_url(report["path"], view))
    wait_ready(driver)
    return driver


def text_of(driver, selector: str) -> str:
    return driver.execute_script("return document.querySelector(arguments[0]).textContent", selector)


def test_counts_in_the_page_equal_the_files(browser, report):
    driver = open_view(browser, report, "episodes")
    expected = {"episodes": len(report["episodes"]) + len(report["branches"]), "branches": len(report["branches"]),
                "pairs": len(report["pairs"]), "results": 1}
    assert {k: int(text_of(driver, f"#count-{k}")) for k in expected} == expected == report["shown"]
    assert int(text_of(driver, "#episodes-shown")) == expected["episodes"]
    assert len(driver.find_elements("css selector", "#episodes-table tbody tr")) == expected["episodes"]
    assert console_errors(driver) == []


def test_a_score_filter_narrows_the_table(browser, report):
    driver = open_view(browser, report, "episodes")
    records = report["episodes"] + report["branches"]
    goals = sorted(a["scores"]["goal"] for r in records for a in r["evaluation"]["agents"])
    low = goals[len(goals) // 2]
    expected = sum(any(a["scores"]["goal"] >= low for a in r["evaluation"]["agents"]) for r in records)
    assert 0 < expected < len(records)
    driver.find_element("id", "f-min").send_keys(repr(low))
    assert int(text_of(driver, "#episodes-shown")) == expected
    assert len(driver.find_elements("css selector", "#episodes-table tbody tr")) == expected
    driver.find_element("id", "f-reset").click()
    assert int(text_of(driver, "#episodes-shown")) == len(records)
    header = driver.find_element("xpath", "//table[@id='episodes-table']//th[text()='0:GOAL']")
    header.click()                                         # sorts ascending, a second click descending
    column = driver.execute_script("return Array.from(document.querySelectorAll('#episodes-table th'))"
                                   ".findIndex(th => th.textContent === '0:GOAL')")
    for order in (sorted, lambda v: sorted(v, reverse=True)):
        shown = [float(c.text) for c in driver.find_elements(
            "css selector", f"#episodes-table tbody tr td:nth-child({column + 1})")]
        assert shown == order(round(r["evaluation"]["agents"][0]["scores"]["goal"], 2) for r in records)
        driver.find_element("xpath", "//table[@id='episodes-table']//th[text()='0:GOAL']").click()
    assert console_errors(driver) == []


def test_an_episode_reads_as_a_conversation_and_injected_markup_stays_text(browser, report):
    driver = open_view(browser, report, "episodes")
    from selenium.webdriver.support.ui import Select

    Select(driver.find_element("id", "f-src")).select_by_visible_text(str(report["run"] / "episodes.jsonl"))
    rows = driver.find_elements("css selector", "#episodes-table tbody tr")
    assert len(rows) == 1
    rows[0].click()
    record = EpisodeRecord.from_dict(report["episodes"][0])
    texts = driver.execute_script(
        "return Array.from(document.querySelectorAll('#episode-view table.conversation td.text'), td => td.textContent)")
    assert texts == [t.argument for t in record.turns] and INJECTED in texts[1]
    assert driver.execute_script("return window.__injected === undefined && document.scripts.length === 2 "
                                 "&& document.querySelectorAll('#episode-view img').length === 0")
    shown = driver.execute_script(
        "return Array.from(document.querySelectorAll('#episode-view .background'), d => d.textContent)")
    assert shown == [background(record.task, 0), background(record.task, 1)]
    judge = text_of(driver, "#episode-view table.judge")
    assert record.evaluation.agents[1].reasoning["goal"] in judge
    assert console_errors(driver) == []


def test_branches_show_the_shared_history_once_and_the_kept_continuation(browser, report):
    driver = open_view(browser, report, "branches")
    branches = report["branches"]
    forks = {(b["parent_episode_id"], b["branch_turn"] or 0) for b in branches}
    kept = {e["positive"] for e in lines(report["run"] / "sample.jsonl") if e["status"] == "kept"}
    assert len(driver.find_elements("css selector", ".fork")) == len(forks)
    # each fork: the parent's own continuation, then every branch from that turn
    assert len(driver.find_elements("css selector", ".fork .continuation")) == len(branches) + len(forks)
    marked = driver.execute_script(
        "return Array.from(document.querySelectorAll('.continuation.kept .meta'), m => m.textContent.split(' ')[0])")
    assert sorted(marked) == sorted(kept) and kept
    for _parent, turn in forks:
        history = driver.find_elements("css selector", f".fork[data-turn='{turn}'] > table.conversation tbody tr")
        assert len(history) == turn
    assert console_errors(driver) == []


def test_pairs_filter_by_kind_and_segment_length_and_highlight_the_segment(browser, report):
    driver = open_view(browser, report, "pairs")
    from selenium.webdriver.support.ui import Select

    Select(driver.find_element("id", "p-kind")).select_by_value("sdpo")
    sdpo = [p for p in report["pairs"] if p["kind"] == "sdpo"]
    assert int(text_of(driver, "#pairs-shown")) == len(sdpo)
    longest = max(p["segment"]["chosen"][1] - p["segment"]["chosen"][0] + 1 for p in sdpo)
    driver.find_element("id", "p-min").send_keys(str(longest))
    expected = [p for p in sdpo if p["segment"]["chosen"][1] - p["segment"]["chosen"][0] + 1 >= longest]
    assert 0 < len(expected) < len(sdpo) and len(expected) <= 10 and int(text_of(driver, "#pairs-shown")) == len(expected)
    cards = driver.execute_script("""
        return Array.from(document.querySelectorAll('.card.pair'), card => {
          const side = (name) => card.querySelector('.side.' + name);
          const count = (node, sel) => node.querySelectorAll(sel).length;
          return {id: card.querySelector('h3').firstChild.textContent,
                  chosen: count(side('chosen'), 'tr.segment'), rejected: count(side('rejected'), 'tr.segment'),
                  errors: count(card, 'tr.error-turn'),
                  colour: getComputedStyle(card.querySelector('tr.segment:not(.error-turn) td, tr.error-turn td'))
                            .backgroundColor,
                  plain: getComputedStyle(card.querySelector('tr.turn:not(.segment) td') || document.body)
                            .backgroundColor};
        });""")
    by_id = {p["pair_id"]: p for p in expected}
    assert sorted(c["id"] for c in cards) == sorted(by_id)
    for card in cards:
        pair = by_id[card["id"]]
        for side in ("chosen", "rejected"):
            first, last = pair["segment"][side]
            assert card[side] == last - first + 1
        assert card["errors"] == 2                         # the error turn on each side
        assert card["colour"] != card["plain"]
    assert console_errors(driver) == []


def test_results_table_and_plots(browser, report):
    driver = open_view(browser, report, "results")
    rows = driver.find_elements("css selector", ".card.result table.results tbody tr")
    assert len(rows) == len(report["results"]["summaries"])
    assert driver.execute_script("return Array.from(document.querySelectorAll('.plots img'), "
                                 "i => i.complete && i.naturalWidth > 0).filter(Boolean).length") == 2
    assert console_errors(driver) == []


def test_data_is_escaped_for_a_script_element():
    text = script_json({"reply": "</script><b>&amp;"})
    assert not set("<>&") & set(text) and json.loads(text) == {"reply": "</script><b>&amp;"}


def test_bad_paths_are_one_line_errors(tmp_path):
    with pytest.raises(ConfigError, match="not an episode store"):
        read_sources([str(REPO / "pyproject.toml")])
    with pytest.raises(ConfigError, match="found no episodes"):
        read_sources([str(tmp_path)])
    done = subprocess.run([sys.executable, "-m", "benchmarks.view", str(tmp_path / "missing"), "--out",
                           str(tmp_path / "r.html")], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
    assert "no such file or folder" in done.stderr and not (tmp_path / "r.html").exists()
