"""SOTOPIA's released data as it really is: pandas artefacts (stringified and fragmented lists,
"nan" cells), goal markup (kept, counted), relationship profiles (checked, sampled from), and
episodes whose turns survive only in ``social_interactions``."""

import json

import pytest

from sotopia_env import (
    DataError,
    LoadReport,
    Relationship,
    load_profiles,
    load_relationships,
    load_scenarios,
    load_sotopia_dump,
    load_sotopia_episodes,
    load_tasks,
    sample_tasks,
)

NAN = float("nan")  # json.dumps writes NaN, as pandas' JSON export does

PROFILES = [
    {"pk": "p1", "first_name": "Ann", "last_name": "Lee", "age": 25, "moral_values": "['Liberty']",
     "schwartz_personal_values": ["['Power', 'Achievement']"], "big_five": "nan", "mbti": NAN},
    {"pk": "p2", "first_name": "Bo", "last_name": "Kim", "age": "nan", "occupation": "nan",
     "moral_values": ["['Liberty'", " 'Care']"], "schwartz_personal_values": "nan"},
    {"pk": "p3", "first_name": "Cy", "last_name": "Moe", "age": 45.0, "secret": "nan",
     "moral_values": ["Care"]},
    # a real name that happens to read "Nan": required fields are never taken for empty cells
    {"pk": "p4", "first_name": "Nan", "last_name": "Ode", "age": 28},
]
EXTRA = "Get the car <extra_info>You need it for a wedding.</extra_info>"
STRATEGY = "Keep the car <strategy_hint>Offer a trade.</strategy_hint>"
UNCLOSED = "Get help <clarification_hint>Ask politely, and mention the deadline"
SCENARIOS = [
    {"pk": "e1", "codename": "car", "scenario": "Two friends share a car.", "agent_goals": [EXTRA, STRATEGY],
     "relationship": "RelationshipType.friend", "source": "nan", "age_constraint": "nan",
     "occupation_constraint": "nan", "agent_constraint": "nan"},
    {"pk": "e2", "codename": "help", "scenario": "Strangers at a bus stop.",
     "agent_goals": [UNCLOSED, "Catch the bus"], "relationship": 0, "age_constraint": "[(18, 30), (18, 70)]"},
    {"pk": "e3", "codename": "queue", "scenario": "A queue at a bakery.",
     "agent_goals": "['Be served first, politely', 'Keep your place']", "relationship": "0",
     "age_constraint": "[(18, 70), (18, 70)]"},
]
RELATIONSHIPS = [
    {"pk": "r1", "agent_1_id": "p1", "agent_2_id": "p2", "relationship": 3, "background_story": "nan"},
    # SOTOPIA's JSONL export names
    {"relationship_id": "r2", "agent1_id": "p3", "agent2_id": "p1",
     "relationship": "RelationshipType.stranger", "background_story": "They met once."},
    {"pk": "r3", "agent_1_id": "p2", "agent_2_id": "p4", "relationship": "0", "tag": "v1"},
    {"pk": "r4", "agent_1_id": "p4", "agent_2_id": "p3", "relationship": 0},
]
COMBOS = [
    {"pk": "c1", "env_id": "e1", "agent_ids": ["p2", "p1"], "tested_seat": "nan"},  # r1, other seat order
    {"pk": "c2", "env_id": "e2", "agent_ids": "['p1', 'p3']"},  # r2: strangers
    {"pk": "c3", "env_id": "e1", "agent_ids": ["p3", "p4"]},  # no relationship profile of p3 and p4
    {"pk": "c4", "env_id": "e2", "agent_ids": ["p1", "p2"]},  # p1 and p2 are friends, e2 wants strangers
]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def files(tmp_path):
    return {
        "scenarios": write_jsonl(tmp_path / "scenarios.jsonl", SCENARIOS),
        "profiles": write_jsonl(tmp_path / "profiles.jsonl", PROFILES),
        "combos": write_jsonl(tmp_path / "combos.jsonl", COMBOS),
        "relationships": write_jsonl(tmp_path / "relationships.jsonl", RELATIONSHIPS),
    }


def test_stringified_lists_and_nan_cells_are_cleaned(files):
    report = LoadReport()
    p1, p2, p3, p4 = load_profiles(files["profiles"], report=report)
    assert p1.moral_values == ["Liberty"] and p1.schwartz_personal_values == ["Power", "Achievement"]
    assert p2.moral_values == ["Liberty", "Care"] and p2.schwartz_personal_values == []
    assert p3.moral_values == ["Care"]
    assert (p1.big_five, p1.mbti, p2.occupation, p3.secret) == ("", "", "", "")
    assert (p2.age, p3.age) == (0, 45) and isinstance(p3.age, int)
    assert p4.name == "Nan Ode"
    assert report.read["profiles"] == 4
    assert (report.stringified_lists, report.fragments_joined, report.nan_to_null) == (2, 1, 6)
    assert report.changes[("fragmented list joined", "moral_values")] == 1

    e1, _, e3 = load_scenarios(files["scenarios"], report=report)
    assert e1.relationship is Relationship.friend and e3.relationship is Relationship.stranger
    assert e1.source == "" and e1.age_constraint is None and e1.occupation_constraint is None
    assert e1.agent_constraint is None
    assert e3.agent_goals == ["Be served first, politely", "Keep your place"]
    assert report.changes[("stringified list parsed", "agent_goals")] == 1


def test_goal_markup_is_kept_and_counted(files):
    report = LoadReport()
    e1, e2, _ = load_scenarios(files["scenarios"], report=report)
    # the renderer decides what each viewer sees; the loader passes the goals on untouched
    assert e1.agent_goals == [EXTRA, STRATEGY] and e2.agent_goals[0] == UNCLOSED
    assert report.goals_with_markup == 3 and report.unclosed_tags == 1
    assert dict(report.markup) == {"extra_info": 1, "strategy_hint": 1, "clarification_hint": 1}


def test_load_sotopia_dump_reports_everything(files):
    tasks, report = load_sotopia_dump(**files)
    assert [t.pk for t in tasks] == ["c1", "c2", "c3", "c4"]
    assert tasks[0].tested_seat is None and tasks[1].agent_names == ["Ann Lee", "Cy Moe"]
    assert dict(report.read) == {"scenarios": 3, "profiles": 4, "combos": 4, "relationships": 4}
    # profiles 2 + agent_goals 1 + agent_ids 1; nan: profiles 6, scenarios 4, relationship 1, combo 1
    assert (report.stringified_lists, report.fragments_joined, report.nan_to_null) == (4, 1, 12)
    assert report.combos_checked == 4 and report.unmatched_combos == ["c3", "c4"]
    summary = report.summary()
    assert summary.startswith("Read 3 scenarios, 4 agent profiles, 4 combos, 4 relationship profiles.")
    for phrase in ("4 stringified lists parsed", "1 fragmented lists joined (moral_values 1)",
                   "12 'nan' values made empty", "1 whole floats made int (age 1)",
                   "3 goals with markup", "1 tag(s) never closed",
                   "2 of 4 combos pair agents with no relationship profile", "c3, c4"):
        assert phrase in summary, phrase
    assert "\n" not in summary


def test_load_tasks_checks_relationships(files, tmp_path):
    report = LoadReport()
    tasks = load_tasks(files["scenarios"], files["profiles"], files["combos"], files["relationships"],
                       report=report)
    assert len(tasks) == 4 and report.combos_checked == 4 and report.unmatched_combos == ["c3", "c4"]
    # without a report the mismatches still show, as a warning; they are no error
    with pytest.warns(UserWarning, match=r"2 of 4 combos pair agents with no relationship profile .*c3, c4"):
        load_tasks(files["scenarios"], files["profiles"], files["combos"], files["relationships"])
    matching = write_jsonl(tmp_path / "matching.jsonl", COMBOS[:2])
    report = LoadReport()
    load_tasks(files["scenarios"], files["profiles"], matching, load_relationships(files["relationships"]),
               report=report)
    assert report.unmatched_combos == [] and "All 2 combos match a relationship profile." in report.summary()


def test_relationship_profiles(files):
    r1, r2, r3, _ = load_relationships(files["relationships"])
    assert (r1.agent_1_id, r1.agent_2_id, r1.relationship) == ("p1", "p2", Relationship.friend)
    assert r1.background_story == ""
    assert (r2.pk, r2.agent_1_id, r2.agent_2_id, r2.relationship) == ("r2", "p3", "p1", Relationship.stranger)
    assert r2.background_story == "They met once." and r3.tag == "v1"
    assert r2.to_dict()["relationship"] == 0 and r2.line == 2


def test_relationship_file_given_to_the_wrong_loader(files, tmp_path):
    with pytest.raises(DataError, match=r"relationships.jsonl line 1: this looks like a relationship profile "
                                        r"file .*load_relationships\(\) \(relationships=\)"):
        load_profiles(files["relationships"])
    with pytest.raises(DataError, match=r"profiles.jsonl line 1: this looks like an agent profile file"):
        load_relationships(files["profiles"])
    rows = [RELATIONSHIPS[0], {**RELATIONSHIPS[2], "relationship": "cousins"}]
    bad = write_jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(DataError, match=r"bad.jsonl line 2: field 'relationship': 'cousins' is not a "):
        load_relationships(bad)
    missing = write_jsonl(tmp_path / "missing.jsonl", [{"pk": "r", "agent_1_id": "p1", "relationship": 0}])
    with pytest.raises(DataError, match=r"missing.jsonl line 1: field 'agent_2_id'"):
        load_relationships(missing)


def test_sample_tasks_follows_sotopias_constraint_based_sampler(files):
    report = LoadReport()
    tasks = sample_tasks(files["scenarios"], files["profiles"], files["relationships"], per_scenario=2,
                         seed=0, report=report)
    by_scenario = {}
    for task in tasks:
        by_scenario.setdefault(task.scenario.pk, []).append([p.pk for p in task.profiles])
    # e1 (friends): only r1, seat order as written; e2 (strangers, seat 0 aged 18-30): only r4,
    # since r2 seats Cy (45) and r3 seats Bo (age unknown: 0); e3: two of the three stranger pairs
    assert by_scenario["e1"] == [["p1", "p2"]] and by_scenario["e2"] == [["p4", "p3"]]
    assert len(by_scenario["e3"]) == 2 and all(
        pair in (["p3", "p1"], ["p2", "p4"], ["p4", "p3"]) for pair in by_scenario["e3"])
    assert report.short_scenarios == ["e1", "e2"] and report.read["sampled"] == 4
    assert tasks[0].pk == "e1:p1:p2"

    def pks(seed, scenarios=files["scenarios"]):
        tasks = sample_tasks(scenarios, files["profiles"], files["relationships"], per_scenario=2, seed=seed,
                             report=LoadReport())
        return [t.pk for t in tasks]

    assert pks(0) == pks(0) == [t.pk for t in tasks]
    assert len({tuple(pks(seed)) for seed in range(12)}) > 1
    # a scenario's draw does not depend on the other scenarios
    e3_only = [s for s in load_scenarios(files["scenarios"]) if s.pk == "e3"]
    assert pks(5, e3_only) == [pk for pk in pks(5) if pk.startswith("e3:")]
    with pytest.warns(UserWarning, match="2 scenarios have fewer than 2 fitting pairs"):
        sample_tasks(files["scenarios"], files["profiles"], files["relationships"], per_scenario=2)
    tasks, report = load_sotopia_dump(scenarios=files["scenarios"], profiles=files["profiles"],
                                      relationships=files["relationships"], per_scenario=1)
    assert len(tasks) == 3 and "3 sampled tasks" in report.summary()


def test_sample_tasks_names_an_unknown_agent(files, tmp_path):
    path = write_jsonl(tmp_path / "rel.jsonl", [RELATIONSHIPS[0], {**RELATIONSHIPS[3], "agent_2_id": "p33"}])
    with pytest.raises(DataError, match=r"rel.jsonl line 2: field 'agent_2_id': unknown agent profile 'p33'"):
        sample_tasks(files["scenarios"], files["profiles"], path)


# A SOTOPIA episode whose export kept the conversation only as text.
INTERACTIONS = (
    'Ann Lee said: "Could I borrow your car on Saturday?"\n\n'
    'Bo Kim said: "I need it myself, sorry."\n\n'
    "Ann Lee: [action] shows the wedding invitation\n\n"
    "Bo Kim: [non-verbal communication] sighs\n\n"
    'Ann Lee said: "I will fill the tank."\n\n'
    "Bo Kim: left the conversation"
)
EXPECTED_TURNS = [
    (0, 0, "speak", "Could I borrow your car on Saturday?"),
    (1, 1, "speak", "I need it myself, sorry."),
    (2, 0, "action", "shows the wedding invitation"),
    (3, 1, "non-verbal communication", "sighs"),
    (4, 0, "speak", "I will fill the tank."),
    (5, 1, "leave", ""),
]


def text_only_episode(**overrides):
    episode = {
        "episode_id": "ep-text",
        "environment_id": "e1",
        "agent_ids": ["p1", "p2"],
        "experiment_tag": "export",
        "experiment_model_name_pairs": ["gpt-4", "gpt-4", "gpt-4"],
        "raw_messages": [],
        "scenario": SCENARIOS[0]["scenario"],
        "codename": "car",
        "agents_background": {"Ann Lee": "Ann Lee is 25.", "Bo Kim": "Bo Kim is 30."},
        "social_goals": {"Ann Lee": EXTRA, "Bo Kim": STRATEGY},
        "social_interactions": INTERACTIONS,
    }
    episode.update(overrides)
    return episode


def test_episode_with_empty_raw_messages_reads_social_interactions(tmp_path):
    env_only = [[["Environment", "Ann Lee", "context"], ["Environment", "Bo Kim", "context"]]]
    rows = [
        text_only_episode(),
        text_only_episode(episode_id="no-raw", raw_messages=None),
        text_only_episode(episode_id="env-only", raw_messages=env_only),
        text_only_episode(episode_id="stale", reasoning="Environment comments: terminated: The conversation "
                          "stales for too long; \nAgent 1 comments:\n"),
    ]
    records = load_sotopia_episodes(write_jsonl(tmp_path / "episodes.jsonl", rows))
    for record in records:
        assert [(t.turn, t.agent_index, t.action_type, t.argument) for t in record.turns] == EXPECTED_TURNS
        assert record.tags["turns_from"] == "social_interactions"
        assert record.tags["turn_order"] == "round-robin"
    assert [r.termination for r in records] == ["leave", "leave", "leave", "stale"]
    assert records[0].task.scenario.agent_goals == [EXTRA, STRATEGY]


def test_benchmark_files_task_set_prints_what_it_loaded(files, tmp_path, capsys):
    from benchmarks.sotopia import SotopiaBenchConfig, load_task_set

    cfg = SotopiaBenchConfig(tasks="files", limit=None, output_dir=str(tmp_path / "run"),
                             **{k: str(v) for k, v in files.items()})
    assert [t.pk for t in load_task_set(cfg)] == ["c1", "c2", "c3", "c4"]
    printed = capsys.readouterr().err
    assert printed.startswith("data: Read 3 scenarios, 4 agent profiles, 4 combos, 4 relationship profiles.")
    assert "2 of 4 combos pair agents" in printed and len(printed.strip().splitlines()) == 1


def test_rendered_prompts_of_quirky_data(files):
    """What the model is shown of the quirky records (native style): no "nan", no list syntax, goal
    markup read as text by the owner and the judge (the unclosed tag's text included) and hidden
    from the partner, who reads "Unknown"."""
    from agents.formatter import ConversationFormat, agent_messages
    from sotopia_env.env import parallel_env
    from sotopia_env.render import background, episode_text

    tasks, _ = load_sotopia_dump(scenarios=files["scenarios"], profiles=files["profiles"], combos=files["combos"])
    by_pk = {t.pk: t for t in tasks}
    car, help_ = by_pk["c1"], by_pk["c2"]         # c1: Bo (seat 0, goal EXTRA), Ann (seat 1, goal STRATEGY)
    owner = agent_messages(car, 0, [], fmt=ConversationFormat())[0]["content"]
    assert "Get the car You need it for a wedding." in owner and "Keep the car" not in owner
    partner = background(car, 1)
    assert "Bo Kim's goal: Unknown" in partner and "wedding" not in partner
    judge = episode_text(car, [])
    assert "You need it for a wedding." in judge and "Offer a trade." in judge
    unclosed = background(help_, 0)
    assert "Get help Ask politely, and mention the deadline" in unclosed
    obs, _ = parallel_env(car).reset(seed=0)
    for text in [owner, partner, judge, unclosed, *obs.values()]:
        assert "nan" not in text.lower().split() and "['" not in text and "<" not in text
