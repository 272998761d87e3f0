"""Content checks of the built-in scenario set (sotopia_env/data): every row parses with the shared
types, ids are unique and cross-references resolve, the splits are disjoint and cover every
category, and each task's profiles fit its scenario (ages, family names, distinct characters)."""
from __future__ import annotations

import ast
import json
import re
from collections import Counter, defaultdict
from pathlib import Path

import pytest

import sotopia_env
from sotopia_env.profiles import Profile, Relationship, Scenario

DATA_DIR = Path(sotopia_env.__file__).resolve().parent / "data"
SPLITS = ("bc", "align", "test")
CATEGORIES = ("negotiation", "persuasion", "cooperation", "competition", "conflict_resolution",
              "exchange_of_favours", "accommodation")
GOAL_TAGS = ("extra_info", "strategy_hint", "clarification_hint")
PROFILE_TEXT_FIELDS = ("first_name", "last_name", "occupation", "gender_pronoun", "public_info", "big_five",
                       "personality_and_values", "decision_making_style", "secret", "mbti")


def _rows(name: str) -> list[dict]:
    with open(DATA_DIR / name, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.fixture(scope="module")
def data():
    profile_rows, scenario_rows = _rows("profiles.jsonl"), _rows("scenarios.jsonl")
    combo_rows = _rows("combos.jsonl")
    profiles = {r["pk"]: Profile.from_dict(r, path="profiles.jsonl", line=i + 1)
                for i, r in enumerate(profile_rows)}
    scenarios = {r["pk"]: Scenario.from_dict(r, path="scenarios.jsonl", line=i + 1)
                 for i, r in enumerate(scenario_rows)}
    return {"profile_rows": profile_rows, "scenario_rows": scenario_rows, "combos": combo_rows,
            "profiles": profiles, "scenarios": scenarios}


def _split(scenario: Scenario) -> str:
    found = [t for t in scenario.tags if t in SPLITS]
    assert len(found) == 1, f"{scenario.pk} has splits {found}"
    return found[0]


def _category(scenario: Scenario) -> str:
    found = [t for t in scenario.tags if t in CATEGORIES]
    assert len(found) == 1, f"{scenario.pk} has categories {found}"
    return found[0]


def test_counts_and_unique_ids(data):
    assert len(data["profile_rows"]) >= 42
    assert len(data["scenario_rows"]) >= 48
    # dict construction dedups: equal sizes mean the pks are unique
    assert len(data["profiles"]) == len(data["profile_rows"])
    assert len(data["scenarios"]) == len(data["scenario_rows"])
    assert len({c["pk"] for c in data["combos"]}) == len(data["combos"])
    assert len({s.codename for s in data["scenarios"].values()}) == len(data["scenarios"])
    # the env keys its agents by full name, so two characters must never share one
    assert len({p.name for p in data["profiles"].values()}) == len(data["profiles"])


def test_profiles_complete(data):
    ages = []
    for row in data["profile_rows"]:
        p = Profile.from_dict(row)
        assert re.fullmatch(r"profile-[a-z-]+", p.pk), p.pk
        for name in PROFILE_TEXT_FIELDS:
            assert getattr(p, name).strip(), f"{p.pk}: empty {name}"
        assert isinstance(row["age"], int) and 18 <= p.age <= 100, p.pk
        assert p.gender in ("Man", "Woman", "Nonbinary"), p.pk
        assert p.moral_values and p.schwartz_personal_values, p.pk
        assert len(p.big_five.split(";")) == 5, p.pk
        assert re.fullmatch(r"[EI][SN][TF][JP]", p.mbti), p.pk
        assert row["model_id"] == "" and row["tag"] == ""
        ages.append(p.age)
    genders = Counter(p.gender for p in data["profiles"].values())
    assert set(genders) == {"Man", "Woman", "Nonbinary"}
    assert min(ages) < 25 and max(ages) > 65
    assert len({p.occupation for p in data["profiles"].values()}) >= 40


def test_scenarios_well_formed(data):
    for row in data["scenario_rows"]:
        s = Scenario.from_dict(row)
        assert s.pk == "scenario-" + s.codename.replace("_", "-"), s.pk
        assert re.fullmatch(r"[a-z0-9]+(_[a-z0-9]+)*", s.codename), s.codename
        assert row["source"] == "sotopia-sdpo builtin" and row["tag"] == ""
        assert row["agent_constraint"] is None
        sentences = re.findall(r"[.!?](?=\s+[A-Z\"]|$)", s.scenario)
        assert 2 <= len(sentences) <= 4, f"{s.pk}: the scenario should be 2-4 sentences"
        g0, g1 = s.agent_goals
        assert g0.strip() and g1.strip() and g0 != g1, s.pk
        for goal in s.agent_goals:
            # inline SOTOPIA tags: only known ones, each opened once and closed
            for tag in re.findall(r"</?([a-z_]+)>", goal):
                assert tag in GOAL_TAGS, f"{s.pk}: unknown tag <{tag}>"
            for tag in GOAL_TAGS:
                assert goal.count(f"<{tag}>") == goal.count(f"</{tag}>") <= 1, f"{s.pk}: unbalanced <{tag}>"
        if s.age_constraint is not None:
            bounds = ast.literal_eval(s.age_constraint)
            assert len(bounds) == 2 and all(lo <= hi for lo, hi in bounds), s.pk
    with_tags = sum(any(f"<{t}>" in g for t in GOAL_TAGS for g in s.agent_goals)
                    for s in data["scenarios"].values())
    assert with_tags >= len(data["scenarios"]) // 2


def test_splits_categories_relationships(data):
    scenarios = list(data["scenarios"].values())
    by_split = defaultdict(set)
    for s in scenarios:
        by_split[_split(s)].add(s.pk)
        assert set(s.tags) <= set(SPLITS) | set(CATEGORIES) | {"hard"}, s.tags
        _category(s)
        if "hard" in s.tags:
            assert _split(s) == "test", f"{s.pk}: hard outside the test split"
    sizes = {k: len(v) for k, v in by_split.items()}
    assert sizes["bc"] >= 12 and sizes["align"] >= 16 and sizes["test"] >= 16, sizes
    assert sum(sizes.values()) == len(scenarios)  # each scenario in exactly one split
    assert 5 <= sum("hard" in s.tags for s in scenarios) <= 8
    for split in SPLITS:
        cats = Counter(_category(s) for s in scenarios if _split(s) == split)
        assert set(cats) == set(CATEGORIES), f"{split} misses {set(CATEGORIES) - set(cats)}"
    assert min(Counter(_category(s) for s in scenarios).values()) >= 5
    assert {s.relationship for s in scenarios} == set(Relationship)


def test_combos_refer_to_data_and_fit_constraints(data):
    profiles, scenarios = data["profiles"], data["scenarios"]
    pairs_per_scenario = defaultdict(set)
    for c in data["combos"]:
        assert c["env_id"] in scenarios, c["pk"]
        scenario = scenarios[c["env_id"]]
        assert c["pk"].startswith(f"task-{scenario.codename}-"), c["pk"]
        a, b = c["agent_ids"]
        assert a in profiles and b in profiles and a != b, c["pk"]
        pair = frozenset((a, b))
        assert pair not in pairs_per_scenario[scenario.pk], f"{c['pk']}: same pair twice"
        pairs_per_scenario[scenario.pk].add(pair)
        if scenario.age_constraint is not None:
            for (lo, hi), pk in zip(ast.literal_eval(scenario.age_constraint), (a, b)):
                assert lo <= profiles[pk].age <= hi, f"{c['pk']}: {pk} is {profiles[pk].age}, needs {lo}-{hi}"
        if scenario.relationship == Relationship.family_member:
            assert profiles[a].last_name == profiles[b].last_name, f"{c['pk']}: family of different names"
        if "hard" in scenario.tags:
            assert c.get("tested_seat") in (0, 1), c["pk"]
        else:
            assert "tested_seat" not in c, c["pk"]
    assert all(len(pairs_per_scenario[pk]) >= 3 for pk in scenarios), \
        [pk for pk in scenarios if len(pairs_per_scenario[pk]) < 3]
    used = {pk for c in data["combos"] for pk in c["agent_ids"]}
    assert used == set(profiles), f"profiles in no task: {set(profiles) - used}"
    hard_seats = Counter(c["tested_seat"] for c in data["combos"] if "tested_seat" in c)
    assert hard_seats[0] > 0 and hard_seats[1] > 0


def test_builtin_tasks_match_files(data):
    builtin_tasks = getattr(sotopia_env, "builtin_tasks", None)
    if builtin_tasks is None:
        pytest.skip("sotopia_env.builtin_tasks is not available")
    split_of = {pk: _split(s) for pk, s in data["scenarios"].items()}
    expected = Counter(split_of[c["env_id"]] for c in data["combos"])
    expected["hard"] = sum("tested_seat" in c for c in data["combos"])
    expected["all"] = len(data["combos"])
    for split in ("bc", "align", "test", "hard", "all"):
        tasks = builtin_tasks(split)
        assert len(tasks) == expected[split], split
        assert len({t.pk for t in tasks}) == len(tasks)
    hard = builtin_tasks("hard")
    assert all(t.tested_seat in (0, 1) and "hard" in t.scenario.tags for t in hard)
    assert {t.pk for t in hard} <= {t.pk for t in builtin_tasks("test")}
    task = builtin_tasks("all")[0]
    first = data["combos"][0]
    assert task.pk == first["pk"] and [p.pk for p in task.profiles] == first["agent_ids"]
