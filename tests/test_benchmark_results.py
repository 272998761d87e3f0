"""benchmarks.results / compare / plots: statistics against hand values, seat and subset
rules, deduplication, the Table-1 layout, PNG output."""
import json
import math

import pytest

from benchmarks import compare, plots, results
from sotopia_env import AgentEvaluation, EpisodeEvaluation, EpisodeRecord, Turn
from sotopia_env.errors import DataError
from sotopia_env.evaluation import DIMENSIONS
from tests.factories import make_task


def scores(goal, rel, base=5.0):
    s = {d: 0.0 for d in DIMENSIONS}
    s.update(believability=base, knowledge=base / 2, goal=goal, relationship=rel)
    return s


def make_record(task, goals, rels, *, models=("m", "m"), seats=(0, 1), key=None, evaluated=True,
                words=((3, 5), (4, 2))):
    turns = []
    for k in range(len(words[0])):
        for seat in (0, 1):
            turns.append(Turn(turn=len(turns), agent_index=seat, speaker=f"s{seat}", action_type="speak",
                              argument=" ".join(["w"] * words[seat][k]), prompt_tokens=10, completion_tokens=2))
    if evaluated:
        ev = EpisodeEvaluation(agents=[AgentEvaluation(scores(goals[0], rels[0])),
                                       AgentEvaluation(scores(goals[1], rels[1]))], judge="j")
    else:
        ev = EpisodeEvaluation.failed("j", "boom")
    return EpisodeRecord(task=task, turns=turns, models=list(models), evaluation=ev,
                         tags={"agent_seats": list(seats), "run_key": key or f"{task.pk}-{seats}"},
                         usage={"judge": {"prompt_tokens": 7, "completion_tokens": 3, "cost": 0.5}})


def test_t_quantile_matches_tables():
    # Student t 0.975 quantiles from any statistics table
    for df, value in [(1, 12.7062), (2, 4.3027), (4, 2.7764), (9, 2.2622), (29, 2.0452), (120, 1.9799)]:
        assert results.t_quantile(0.975, df) == pytest.approx(value, abs=1e-4)
    assert results.t_quantile(0.95, 3) == pytest.approx(2.3534, abs=1e-4)


def test_mean_ci_hand_values():
    ci = results.mean_ci([2.0, 4.0, 9.0])
    mean = 5.0
    s = math.sqrt(((2 - 5) ** 2 + (4 - 5) ** 2 + (9 - 5) ** 2) / 2)  # sqrt(13)
    half = 4.302653 * s / math.sqrt(3)
    assert ci.mean == pytest.approx(mean)
    assert ci.std == pytest.approx(s)
    assert ci.half_width == pytest.approx(half, rel=1e-5)
    assert (ci.ci_low, ci.ci_high) == pytest.approx((mean - half, mean + half), rel=1e-5)
    one = results.mean_ci([3.0])
    assert one.mean == 3.0 and one.half_width is None and one.format() == "3.00"
    assert results.mean_ci([]).mean is None


def test_summaries_seats_subsets_and_dedup():
    easy, hard = make_task("t1"), make_task("t2", tags=["hard"], tested_seat=1)
    recs = [
        # self-chat: both seats count on "all"; only seat 1 on "hard"
        make_record(easy, (8, 4), (2, 0)),
        make_record(hard, (6, 2), (1, -1)),
        # a judge failure, later retried under the same key: only the evaluated one counts
        make_record(easy, (0, 0), (0, 0), key="retry", evaluated=False),
        make_record(easy, (10, 6), (3, 3), key="retry"),
        # a key that never got evaluated
        make_record(easy, (0, 0), (0, 0), key="lost", evaluated=False),
    ]
    rows = {(r.role, r.subset, r.seat): r for r in results.summarize(recs) if r.model == "m"}
    all_goal = rows[("agent", "all", "all")].columns["goal"]
    # episode values are the mean of both seats: 6, 4, 8
    assert all_goal.n == 3 and all_goal.mean == pytest.approx(6.0)
    assert all_goal.half_width == pytest.approx(4.302653 * 2.0 / math.sqrt(3), rel=1e-5)
    assert rows[("agent", "all", "0")].columns["goal"].mean == pytest.approx((8 + 6 + 10) / 3)
    hard_row = rows[("agent", "hard", "all")]
    assert hard_row.n_episodes == 1 and hard_row.columns["goal"].mean == 2.0
    assert hard_row.columns["relationship"].mean == -1.0
    # overall is the mean of the seven dimensions, averaged over the counted seats
    expected_overall = (sum(scores(6, 1).values()) / 7 + sum(scores(2, -1).values()) / 7) / 2
    assert rows[("agent", "all", "all")].columns["overall"].mean == pytest.approx(
        (sum(scores(8, 2).values()) / 7 + sum(scores(4, 0).values()) / 7 + 2 * expected_overall
         + sum(scores(10, 3).values()) / 7 + sum(scores(6, 3).values()) / 7) / 6)
    assert ("partner", "all", "all") not in rows  # self-chat has no partner
    doc = results.results_document(recs)
    assert doc["counts"] == {"stored": 5, "evaluated": 3, "unevaluated": 1, "unevaluated_run_keys": ["lost"]}
    assert doc["usage"]["cost"] == pytest.approx(2.5) and doc["usage"]["judge"]["prompt_tokens"] == 35
    json.dumps(doc)  # serialisable


def test_versus_partner_roles_and_hard_seat():
    hard = make_task("h", tags=["hard"], tested_seat=0)
    recs = [make_record(hard, (7, 3), (2, 1), models=("agent", "gpt"), seats=(0,), key="a"),
            make_record(hard, (5, 9), (0, 4), models=("gpt", "agent"), seats=(1,), key="b",
                        words=((1, 1), (7, 9)))]
    rows = {(r.model, r.role, r.subset, r.seat): r for r in results.summarize(recs)}
    assert rows[("agent", "agent", "all", "all")].columns["goal"].mean == pytest.approx(8.0)  # 7 and 9
    # hard: only the episode where the agent sat in the task's tested seat (0)
    assert rows[("agent", "agent", "hard", "all")].columns["goal"].mean == 7.0
    assert rows[("agent", "agent", "hard", "all")].n_episodes == 1
    assert rows[("gpt", "partner", "all", "all")].columns["goal"].mean == pytest.approx(4.0)
    lengths = results.output_length_per_turn(recs)
    # agent: seat 0 in "a" (3, 5 words) and seat 1 in "b" (7, 9 words)
    assert lengths["agent"] == pytest.approx([5.0, 7.0])
    assert "gpt" not in lengths
    # partner: seat 1 in "a" (4, 2 words) and seat 0 in "b" (1, 1 words)
    assert results.output_length_per_turn(recs, role="partner")["gpt"] == pytest.approx([2.5, 1.5])
    table = results.markdown_table(results.summarize(recs))
    assert "| agent | all | all | 2 |" in table and "gpt" not in table


def write_run(tmp_path, name, config, recs):
    run = tmp_path / name
    run.mkdir()
    results.write_results(results.results_document(recs, config=config), run / "results.json", run / "results.md")
    return run


PAPER = {"prompt_style": "sotopia", "judge": "gpt-4o"}   # the paper's setting: no qualifier but the turns


def test_compare_table1_layout(tmp_path, capsys):
    t, h = make_task("t"), make_task("h", tags=["hard"], tested_seat=0)
    self_a = write_run(tmp_path, "a_self", {"agent": "A", "partner": "self", "max_turns": 20, **PAPER},
                       [make_record(t, (8, 8), (2, 2), models=("A", "A")), make_record(h, (6, 0), (1, 0), models=("A", "A"))])
    vs_a = write_run(tmp_path, "a_vs", {"agent": "A", "partner": "gpt-4o", **PAPER},
                     [make_record(t, (5, 9), (1, 4), models=("A", "gpt-4o"), seats=(0,))])
    self_b = write_run(tmp_path, "b_self", {"agent": "B", "partner": "self", "name": "SDPO", **PAPER},
                       [make_record(t, (9, 9), (3, 3), models=("B", "B"))])
    table = compare.main([str(vs_a), str(self_a), str(self_b / "results.json"), "--plot-dir", str(tmp_path / "p")])
    for name in ("compare_scores.png", "compare_output_length.png"):
        assert (tmp_path / "p" / name).read_bytes()[:4] == b"\x89PNG"
    lines = table.splitlines()
    assert lines[0] == ("| agent | self-chat · all · GOAL | self-chat · all · REL | self-chat · hard · GOAL | "
                        "self-chat · hard · REL | vs gpt-4o · all · GOAL | vs gpt-4o · all · REL | "
                        "vs gpt-4o · hard · GOAL | vs gpt-4o · hard · REL |")
    assert lines[2] == "| A | 5.50 | 1.25 | 6.00 | 1.00 | 5.00 | 1.00 | – | – |"
    assert lines[3] == "| SDPO | **9.00** | **3.00** | – | – | – | – | – | – |"
    assert table in capsys.readouterr().out
    ten = write_run(tmp_path, "b_ten", {"agent": "B", "partner": "self", "name": "SDPO", "max_turns": 10, **PAPER},
                    [make_record(t, (4, 4), (1, 1), models=("B", "B"))])
    short = compare.compare_table([compare.load_run(p) for p in (self_b, ten)], subsets=["all"], dims=["goal"])
    assert short.splitlines()[0] == "| agent | self-chat · all · GOAL | self-chat (10 turns) · all · GOAL |"
    assert short.splitlines()[2] == "| SDPO | 9.00 | 4.00 |"
    # runs made otherwise (our prompts, a local judge) get a column of their own, never the paper's
    native = write_run(tmp_path, "b_native", {"agent": "B", "partner": "self", "name": "SDPO", "judge": "local"},
                       [make_record(t, (3, 3), (1, 1), models=("B", "B"))])
    mixed = compare.compare_table([compare.load_run(p) for p in (self_b, native)], subsets=["all"], dims=["goal"])
    assert mixed.splitlines()[0] == ("| agent | self-chat · all · GOAL | "
                                     "self-chat (native prompts, judge local) · all · GOAL |")
    with pytest.raises(DataError, match="results.json"):
        compare.load_run(tmp_path / "missing")


def test_plots_write_png(tmp_path):
    recs = [make_record(make_task("t"), (8, 4), (2, 0), models=("A", "A"), key="1"),
            make_record(make_task("u"), (6, 4), (2, 0), models=("B", "B"), key="2")]
    p1 = plots.plot_dimensions(results.summarize(recs), tmp_path / "scores.png")
    p2 = plots.plot_output_length(results.output_length_per_turn(recs), tmp_path / "length.png")
    for p in (p1, p2):
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000
    with pytest.raises(ValueError):
        plots.plot_dimensions(results.summarize(recs), tmp_path / "x.png", subset="hard")


def test_compare_paper_rows_are_published_apart_and_leave_ours_unchanged(tmp_path):
    t = make_task("t")
    ours = write_run(tmp_path, "b_self", {"agent": "B", "partner": "self", "name": "SDPO", **PAPER},
                     [make_record(t, (9, 9), (3, 3), models=("B", "B"))])
    alone = compare.main([str(ours)])
    both = compare.main([str(ours), "--paper", "--out", str(tmp_path / "t.md")])
    assert both.startswith(alone + "\n\n")          # our rows and columns as without --paper
    published = both[len(alone):]
    assert "arXiv:2501.01821v2" in published and "Table 1" in published and "Table 9" in published
    header = next(line for line in published.splitlines() if line.startswith("| published agent"))
    assert all(c.strip().startswith("published") for c in header.strip("|").split("|"))
    assert "| Llama-8B+BC+SDPO | 8.56 | 3.69 | 7.10 | 3.22 | 8.13 | 3.16 | 6.69 | 2.78 | 7.53 | 2.71 | 5.20 | 1.64 |" \
        in published
    assert "**" not in published and "| SDPO |" not in published     # nothing of ours, no contest marks
    assert (tmp_path / "t.md").read_text() == both + "\n"
    only = compare.main(["--paper", "--subsets", "all", "--dims", "goal"])
    assert only.splitlines()[2] == ("| published agent | published · self-chat · all · GOAL | "
                                    "published · vs gpt-4o · all · GOAL | published · vs gpt-4o-mini · all · GOAL |")


def test_paper_table_data_matches_its_own_average_column():
    """Each published row's AVG (the paper's own column) is the mean of its six goal and relationship
    cells: a check on the transcription of every number."""
    doc = json.loads(compare.PAPER_TABLE.read_text())
    assert len(doc["rows"]) == 11
    for row in doc["rows"]:
        for subset in ("all", "hard"):
            cells = [v for setting in doc["settings"] for v in row[subset][setting]]
            assert sum(cells) / 6 == pytest.approx(row[subset]["average"], abs=0.0051), (row["agent"], subset)
