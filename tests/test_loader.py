"""Loaders of SOTOPIA's files: profiles, scenarios, combos, environment lists, published episodes."""

import json

import pytest

from sotopia_env import (
    DataError,
    EpisodeRecord,
    Relationship,
    load_combos,
    load_environment_lists,
    load_profiles,
    load_scenarios,
    load_sotopia_episodes,
    load_tasks,
    parallel_env,
    select_environment_list,
)
from sotopia_env.render import background as render_background

PROFILES = [
    {
        "pk": "ag1",
        "first_name": "Nora",
        "last_name": "Quinn",
        "age": 34,
        "occupation": "Nurse",
        "gender": "Woman",
        "gender_pronoun": "She/her",
        "public_info": "Works night shifts.",
        "big_five": "High conscientiousness",
        "moral_values": ["Care"],
        "schwartz_personal_values": ["Benevolence"],
        "personality_and_values": "Patient.",
        "decision_making_style": "Analytical",
        "secret": "Failed an exam.",
        "model_id": "",
        "mbti": "ISFJ",
    },
    {
        "pk": "ag2",
        "first_name": "Omar",
        "last_name": "Reyes",
        "age": 52,
        "occupation": "Plumber",
        "gender": "Man",
        "gender_pronoun": "He/him",
        "secret": "Owes his brother money.",
    },
    {"pk": "ag3", "first_name": "Pia", "last_name": "Sato", "age": 23},
]
SCENARIOS = [
    {
        "pk": "env1",
        "codename": "leaky_sink",
        "source": "ours",
        "scenario": "A nurse asks her neighbour to fix a sink.",
        "agent_goals": ["Get the sink fixed for free", "Get paid for the repair"],
        "relationship": 2,
        "age_constraint": "[(18, 70), (18, 70)]",
        "occupation_constraint": None,
        "agent_constraint": None,
        "tag": "",
    },
    {
        "pk": "env2",
        "codename": "shared_car",
        "scenario": "Two friends share a car.",
        "agent_goals": ["Use the car on Saturday", "Use the car on Saturday"],
        "relationship": 3,
    },
]
COMBOS = [
    {"pk": "c1", "env_id": "env1", "agent_ids": ["ag1", "ag2"]},
    {"pk": "c2", "env_id": "env1", "agent_ids": ["ag2", "ag3"]},
    {"pk": "c3", "env_id": "env2", "agent_ids": ["ag3", "ag1"], "tested_seat": 1},
]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def files(tmp_path):
    return (
        write_jsonl(tmp_path / "scenarios.jsonl", SCENARIOS),
        write_jsonl(tmp_path / "profiles.jsonl", PROFILES),
        write_jsonl(tmp_path / "combos.jsonl", COMBOS),
    )


def test_load_tasks_from_jsonl(files):
    tasks = load_tasks(*files)
    assert [t.pk for t in tasks] == ["c1", "c2", "c3"]
    first = tasks[0]
    assert first.agent_names == ["Nora Quinn", "Omar Reyes"] and first.scenario.codename == "leaky_sink"
    assert first.scenario.relationship is Relationship.acquaintance
    assert first.profiles[0].moral_values == ["Care"] and first.profiles[0].secret == "Failed an exam."
    assert tasks[2].tested_seat == 1 and tasks[0].tested_seat is None


def test_json_list_and_object_forms(tmp_path):
    (tmp_path / "p.json").write_text(json.dumps(PROFILES, indent=2))
    assert [p.pk for p in load_profiles(tmp_path / "p.json")] == ["ag1", "ag2", "ag3"]
    (tmp_path / "one.json").write_text(json.dumps(PROFILES[1]))
    assert [p.name for p in load_profiles(tmp_path / "one.json")] == ["Omar Reyes"]
    by_id = {p["pk"]: {k: v for k, v in p.items() if k != "pk"} for p in PROFILES}
    (tmp_path / "by_id.json").write_text(json.dumps(by_id))
    assert [p.pk for p in load_profiles(tmp_path / "by_id.json")] == ["ag1", "ag2", "ag3"]


def test_sotopia_export_field_names(tmp_path):
    # SOTOPIA's own JSONL exports name the pk agent_id / env_id / combo_id and write the
    # relationship as text.
    profiles = [
        {"agent_id": "a", "first_name": "Ann", "last_name": "Lee"},
        {"agent_id": "b", "first_name": "Bo", "last_name": "Kim"},
    ]
    scenarios = [
        {
            "env_id": "e",
            "codename": "x",
            "scenario": "s",
            "agent_goals": ["g1", "g2"],
            "relationship": "RelationshipType.family_member",
            "agent_constraint": "none",
        },
        {"env_id": "f", "codename": "y", "scenario": "s", "agent_goals": ["g1", "g2"], "relationship": "1"},
    ]
    combos = [{"combo_id": "k", "env_id": "e", "agent_ids": ["a", "b"]}]
    tasks = load_tasks(
        write_jsonl(tmp_path / "s.jsonl", scenarios),
        write_jsonl(tmp_path / "p.jsonl", profiles),
        write_jsonl(tmp_path / "c.jsonl", combos),
    )
    assert tasks[0].pk == "k" and tasks[0].scenario.relationship is Relationship.family_member
    assert tasks[0].scenario.agent_constraint is None
    assert load_scenarios(tmp_path / "s.jsonl")[1].relationship is Relationship.know_by_name


def test_malformed_json_names_file_and_line(tmp_path):
    path = tmp_path / "profiles.jsonl"
    path.write_text(json.dumps(PROFILES[0]) + "\n\n" + '{"pk": "ag2", "first_name": "Omar",\n')
    with pytest.raises(DataError, match=r"profiles.jsonl line 3: not valid JSON"):
        load_profiles(path)
    path = tmp_path / "profiles.json"
    path.write_text(
        '[\n  {"pk": "a", "first_name": "A", "last_name": "B"},\n  {"pk": "b", "first_name": }\n]'
    )
    with pytest.raises(DataError, match=r"profiles.json line 3: not valid JSON"):
        load_profiles(path)


def test_bad_row_names_file_line_and_field(tmp_path):
    rows = [PROFILES[0], {**PROFILES[1], "age": "fifty"}]
    with pytest.raises(DataError, match=r"profiles.jsonl line 2: field 'age': expected int"):
        load_profiles(write_jsonl(tmp_path / "profiles.jsonl", rows))
    path = tmp_path / "profiles.json"
    path.write_text(json.dumps([PROFILES[0], {"pk": "x", "first_name": "X"}], indent=2))
    with pytest.raises(DataError, match=r"profiles.json line \d+: field 'last_name'"):
        load_profiles(path)
    bad_goals = [{**SCENARIOS[0], "agent_goals": ["only one"]}]
    with pytest.raises(DataError, match=r"scenarios.jsonl line 1: field 'agent_goals': expected a list of 2"):
        load_scenarios(write_jsonl(tmp_path / "scenarios.jsonl", bad_goals))
    bad_rel = [SCENARIOS[1], {**SCENARIOS[0], "relationship": 9}]
    with pytest.raises(DataError, match=r"line 2: field 'relationship'.*allowed: 0 \(stranger\)"):
        load_scenarios(write_jsonl(tmp_path / "scenarios.jsonl", bad_rel))
    with pytest.raises(DataError, match=r"combos.jsonl line 1: field 'agent_ids'"):
        load_combos(
            write_jsonl(tmp_path / "combos.jsonl", [{"pk": "c", "env_id": "env1", "agent_ids": ["ag1"]}])
        )
    with pytest.raises(DataError, match=r"line 2: field 'pk': duplicate pk 'ag1' \(first on line 1\)"):
        load_profiles(write_jsonl(tmp_path / "dup.jsonl", [PROFILES[0], PROFILES[0]]))
    with pytest.raises(DataError, match="no such"):
        load_profiles(tmp_path / "missing.jsonl")


def test_unknown_ids_list_close_matches(files, tmp_path):
    scenarios, profiles, _ = files
    combos = write_jsonl(
        tmp_path / "bad_combos.jsonl",
        [COMBOS[0], {"pk": "c9", "env_id": "env_1", "agent_ids": ["ag1", "ag2"]}],
    )
    with pytest.raises(
        DataError,
        match=r"bad_combos.jsonl line 2: field 'env_id': unknown scenario 'env_1'; "
        r"close matches: env1",
    ):
        load_tasks(scenarios, profiles, combos)
    combos = write_jsonl(
        tmp_path / "bad_agent.jsonl", [{"pk": "c9", "env_id": "env1", "agent_ids": ["ag1", "agX"]}]
    )
    with pytest.raises(DataError, match=r"unknown agent profile 'agX'; close matches: .*ag1"):
        load_tasks(scenarios, profiles, combos)


def test_environment_list_selects_tasks_with_tested_seat(files, tmp_path):
    tasks = load_tasks(*files)
    path = tmp_path / "hard.json"
    path.write_text(json.dumps({"name": "hard", "environments": ["env2", "env1"], "agent_index": ["0", 1]}))
    (hard,) = load_environment_lists(path)
    selected = select_environment_list(tasks, hard)
    assert [(t.pk, t.tested_seat) for t in selected] == [("c3", 0), ("c1", 1), ("c2", 1)]
    path.write_text(json.dumps({"name": "hard", "environments": ["env2"], "agent_index": [0, 1]}))
    with pytest.raises(DataError, match="field 'agent_index'"):
        load_environment_lists(path)
    bad = load_environment_lists(
        write_jsonl(tmp_path / "l.jsonl", [{"name": "x", "environments": ["env3"]}])
    )[0]
    with pytest.raises(DataError, match="unknown scenario 'env3'; close matches: env2, env1"):
        select_environment_list(tasks, bad)


# A SOTOPIA-format episode line (the fields of their published episode files).
BACKGROUNDS = {
    "Nora Quinn": "Nora Quinn is a 34-year-old female nurse. She/her pronouns. Works night shifts. Personality and "
    "values description: Patient. Nora's secrets: Failed an exam.",
    "Omar Reyes": "Omar Reyes is a 52-year-old male plumber. He/him pronouns. Personality and values description: "
    "Calm. Omar's secrets: Owes his brother money.",
}
REASONING = (
    "Environment comments: terminated: Omar Reyes is leaving; \n"
    "Agent 1 comments:\nbelievability: Nora stays in character.\ngoal: The sink got fixed for free.\n"
    "Agent 2 comments:\nbelievability: Natural.\ngoal: Omar was not paid.\n"
)
SCORES_1 = {
    "believability": 9.0,
    "relationship": 3.0,
    "knowledge": 2.0,
    "secret": 0.0,
    "social_rules": 0.0,
    "financial_and_material_benefits": 2.0,
    "goal": 8.0,
}
SCORES_2 = {
    "believability": 8.0,
    "relationship": 2.0,
    "knowledge": 1.0,
    "secret": -2.0,
    "social_rules": 0.0,
    "financial_and_material_benefits": -1.0,
    "goal": 3.0,
}


def sotopia_episode(**overrides):
    env_msgs = [["Environment", name, f"Here is the context ... {name}"] for name in BACKGROUNDS]
    def turn(a, b):
        return [["Nora Quinn", "Environment", a], ["Omar Reyes", "Environment", b]]

    episode = {
        "episode_id": "01H7VFHNV13MHN97GAH73E3KM8",
        "environment_id": "env1",
        "agent_ids": ["ag1", "ag2"],
        "experiment_tag": "gpt-4_gpt-4_v0.0.1",
        "experiment_model_name_pairs": ["gpt-4", "gpt-4", "gpt-3.5-turbo"],
        "raw_messages": [
            env_msgs,
            turn('said: "Hi Omar, my sink leaks."', "did nothing") + env_msgs,
            turn("did nothing", "[non-verbal communication] nods") + env_msgs,
            turn("did nothing", "did nothing") + env_msgs,
            turn("did nothing", "[action] fixes the sink") + env_msgs,
            turn('said: "Thank you, "really"!"', "did nothing") + env_msgs,
            turn("did nothing", "left the conversation") + env_msgs,
        ],
        "raw_rewards": [[4.4, SCORES_1], [1.6, SCORES_2]],
        "raw_rewards_prompt": "Prompt after formatting: ...",
        "scenario": SCENARIOS[0]["scenario"],
        "codename": "leaky_sink",
        "agents_background": BACKGROUNDS,
        "social_goals": {
            "Nora Quinn": SCENARIOS[0]["agent_goals"][0],
            "Omar Reyes": SCENARIOS[0]["agent_goals"][1],
        },
        "social_interactions": 'Nora Quinn said: "Hi Omar, my sink leaks."\n\nOmar Reyes: [non-verbal communication] '
        'nods\n\nOmar Reyes: [action] fixes the sink\n\nNora Quinn said: "Thank you, '
        '"really"!"\n\nOmar Reyes: left the conversation',
        "reasoning": REASONING,
        "rewards": [{**SCORES_1, "overall_score": 3.43}, {**SCORES_2, "overall_score": 1.57}],
    }
    episode.update(overrides)
    return episode


EXPECTED_TURNS = [
    (0, 0, "speak", "Hi Omar, my sink leaks."),
    (1, 1, "non-verbal communication", "nods"),
    (2, 0, "none", ""),
    (3, 1, "action", "fixes the sink"),
    (4, 0, "speak", 'Thank you, "really"!'),
    (5, 1, "leave", ""),
]


def test_sotopia_episode_to_record(tmp_path):
    path = write_jsonl(tmp_path / "episodes.jsonl", [sotopia_episode()])
    (record,) = load_sotopia_episodes(path)
    assert record.episode_id == "01H7VFHNV13MHN97GAH73E3KM8"
    assert [(t.turn, t.agent_index, t.action_type, t.argument) for t in record.turns] == EXPECTED_TURNS
    assert record.turns[0].speaker == "Nora Quinn" and record.termination == "leave"
    assert record.models == ["gpt-4", "gpt-3.5-turbo"] and record.evaluation.judge == "gpt-4"
    assert (
        record.tags["turn_order"] == "round-robin" and record.tags["experiment_tag"] == "gpt-4_gpt-4_v0.0.1"
    )
    assert record.score(0) == 8.0 and record.score(1, "secret") == -2.0
    assert record.evaluation.agents[0].overall == pytest.approx(24 / 7)
    assert record.evaluation.agents[0].reasoning["goal"] == "The sink got fixed for free."
    assert record.evaluation.agents[1].reasoning["believability"] == "Natural."
    assert "terminated" in record.evaluation.comment
    # the task is rebuilt from the episode's text: secrets kept apart, visible only to their owner
    task = record.task
    assert task.agent_names == ["Nora Quinn", "Omar Reyes"] and task.scenario.codename == "leaky_sink"
    assert (
        task.profiles[1].secret == "Owes his brother money." and "secret" not in task.profiles[1].public_info
    )
    assert "Owes his brother" not in render_background(task, 0)
    assert "Get paid for the repair" == task.scenario.agent_goals[1]
    # it round-trips through our store format and can be branched into
    again = EpisodeRecord.from_dict(json.loads(json.dumps(record.to_dict())))
    assert again.to_dict() == record.to_dict()
    env = parallel_env(task)
    obs, infos = env.reset(options={"history": record, "branch_turn": 3})
    assert env.turn == 3 and env.next_agents() == ["Omar Reyes"]
    assert "Omar Reyes [non-verbal communication] nods" in obs["Nora Quinn"]


def test_sotopia_episode_with_profile_and_scenario_files(files, tmp_path):
    scenarios, profiles, _ = files
    path = write_jsonl(tmp_path / "episodes.jsonl", [sotopia_episode()])
    (record,) = load_sotopia_episodes(path, profiles=profiles, scenarios=scenarios)
    assert record.task.profiles[0].occupation == "Nurse"
    assert record.task.scenario.relationship is Relationship.acquaintance


def test_sotopia_episode_variants(tmp_path):
    rows = [
        # no raw_messages: read the rendered conversation, skipped turns filled with none
        sotopia_episode(raw_messages=None, episode_id="text-only"),
        # SOTOPIA's judge answer shape [reasoning, score], and no rewards field
        sotopia_episode(
            episode_id="v014",
            rewards=None,
            raw_rewards={
                "agent_1_evaluation": {d: ["because", v] for d, v in SCORES_1.items()},
                "agent_2_evaluation": {d: ["why not", v] for d, v in SCORES_2.items()},
            },
        ),
        # SOTOPIA stored a failed judge as bare numbers: not evaluated, not a score of 0
        sotopia_episode(episode_id="failed", rewards=[0.0, 0.0]),
        # the termination reason is read from SOTOPIA's environment comment when there is one
        sotopia_episode(
            episode_id="stale",
            reasoning="Environment comments: terminated: The conversation stales "
            "for too long; \nAgent 1 comments:\n",
        ),
    ]
    text_only, v014, failed, stale = load_sotopia_episodes(write_jsonl(tmp_path / "e.jsonl", rows))
    assert stale.termination == "stale" and text_only.termination == "leave"
    assert [(t.turn, t.agent_index, t.action_type, t.argument) for t in text_only.turns] == EXPECTED_TURNS
    assert v014.score(1) == 3.0 and v014.evaluation.agents[0].reasoning["knowledge"] == "because"
    assert not failed.evaluated and "not evaluated" in failed.evaluation.error


def test_sotopia_episode_errors(tmp_path):
    bad_score = sotopia_episode(rewards=[{**SCORES_1, "goal": 11.0}, SCORES_2])
    path = write_jsonl(tmp_path / "e.jsonl", [sotopia_episode(), bad_score])
    with pytest.raises(
        DataError, match=r"e.jsonl line 2: field 'rewards\[0\]'.*'goal' is 11.0 but must be in"
    ):
        load_sotopia_episodes(path)
    missing = sotopia_episode(rewards=[{k: v for k, v in SCORES_1.items() if k != "secret"}, SCORES_2])
    with pytest.raises(DataError, match=r"line 1: field 'rewards\[0\]': missing dimension 'secret'"):
        load_sotopia_episodes(write_jsonl(tmp_path / "m.jsonl", [missing]))
    odd = sotopia_episode()
    odd["raw_messages"][1][0] = ["Nora Quinn", "Environment", "sings loudly"]
    with pytest.raises(DataError, match=r"field 'raw_messages': turn 1: cannot read 'sings loudly'"):
        load_sotopia_episodes(write_jsonl(tmp_path / "o.jsonl", [odd]))
    with pytest.raises(DataError, match=r"field 'social_goals'"):
        load_sotopia_episodes(write_jsonl(tmp_path / "g.jsonl", [sotopia_episode(social_goals={"A B": "x"})]))
