"""The SOTOPIA ParallelEnv: PettingZoo API, turn orders, termination, visibility, branch reset,
determinism, rewards from an evaluator, and records."""

import math
import random
import warnings

import pytest
from pettingzoo.test import parallel_api_test

from sotopia_env import (
    ACTION_TYPES,
    AgentEvaluation,
    ConfigError,
    DataError,
    EpisodeEvaluation,
    EpisodeRecord,
    Profile,
    RewardWeights,
    Turn,
    aec_env,
    parallel_env,
)
from sotopia_env.env import TURN_ORDERS
from tests.factories import RENT_TALK, make_task

ORDERS = list(TURN_ORDERS)
TASK = make_task(**RENT_TALK, relationship=2)
MIA, LEO = TASK.agent_names


def scripted_actions(env, rng: random.Random, *, allow_leave=True) -> dict:
    """A seeded policy: each agent whose turn it is picks an action type; the others submit none."""
    actions = {}
    for agent in env.agents:
        if agent in env.next_agents():
            kinds = ["speak", "speak", "non-verbal communication", "action", "none"] + (
                ["leave"] if allow_leave else []
            )
            kind = rng.choice(kinds)
            actions[agent] = {"action_type": kind, "argument": f"{kind} {rng.randrange(1000)} from {agent}"}
        else:
            actions[agent] = {"action_type": "none", "argument": ""}
    return actions


def play(env, seed, *, policy_seed=0, allow_leave=True, task=TASK):
    """Play one episode; return (record, list of (observations, infos) after reset and each step,
    list of the actions submitted)."""
    rng = random.Random(policy_seed)
    obs, infos = env.reset(seed=seed, options={"task": task})
    trace, submitted = [(obs, infos)], []
    while env.agents:
        actions = scripted_actions(env, rng, allow_leave=allow_leave)
        submitted.append(actions)
        obs, rewards, terms, truncs, infos = env.step(actions)
        trace.append((obs, infos))
    return env.to_record(), trace, submitted


@pytest.mark.parametrize("turn_order", ORDERS)
def test_parallel_api_test(turn_order):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the API test passes an unknown reset option on purpose
        parallel_api_test(parallel_env(TASK, turn_order=turn_order), num_cycles=100)


def test_aec_wrapper_plays_an_episode():
    # PettingZoo's AEC api_test assumes numpy observations, so text observations cannot use it.
    env = aec_env(TASK, max_turns=4)
    env.reset(seed=0)
    steps = 0
    for agent in env.agent_iter():
        obs, reward, term, trunc, info = env.last()
        assert isinstance(obs, str) and "Here is the context" in obs
        env.step(None if term or trunc else {"action_type": "speak", "argument": f"{agent} talks"})
        steps += 1
    assert steps == 2 * 4 + 2  # one action per agent per turn, then one final call each
    assert env.unwrapped.history[-1].turn == 3


def test_spaces_are_cached_and_samples_fit():
    env = parallel_env(TASK)
    obs, _ = env.reset(seed=0)
    assert env.action_space(MIA) is env.action_space(LEO) is env.action_space(MIA)
    assert env.observation_space(MIA) is env.observation_space(MIA)
    sample = env.action_space(MIA).sample()
    assert env.action_space(MIA).contains(sample)
    assert env.observation_space(MIA).contains(obs[MIA])  # Unicode text with punctuation is in the space
    env.step({MIA: sample, LEO: env.action_space(LEO).sample()})  # sampled actions are legal


def test_round_robin_seat_zero_first_and_other_ignored():
    env = parallel_env(TASK)
    obs, infos = env.reset(seed=0)
    assert env.agents == [MIA, LEO] and env.next_agents() == [MIA]
    assert infos[MIA]["is_my_turn"] and not infos[LEO]["is_my_turn"]
    assert infos[MIA]["available_actions"] == list(ACTION_TYPES) and infos[LEO]["available_actions"] == [
        "none"
    ]
    assert "It is your turn" in obs[MIA] and "you can only do nothing" in obs[LEO]
    _, rewards, terms, truncs, infos = env.step(
        {
            MIA: {"action_type": "speak", "argument": "Hello Leo."},
            LEO: {"action_type": 1, "argument": "I interrupt!"},
        }
    )
    assert infos[LEO]["ignored_action"] and not infos[MIA]["ignored_action"]
    assert [(t.turn, t.agent_index, t.action_type, t.argument) for t in env.history] == [
        (0, 0, "speak", "Hello Leo.")
    ]
    assert env.turn == 1 and env.next_agents() == [LEO] and infos[LEO]["turn"] == 1
    assert rewards == {MIA: 0.0, LEO: 0.0} and not any(terms.values()) and not any(truncs.values())
    # the partner doing nothing when it is not its turn is not an ignored action
    _, _, _, _, infos = env.step(
        {
            MIA: {"action_type": "none", "argument": ""},
            LEO: {"action_type": "action", "argument": "opens the window"},
        }
    )
    assert not infos[MIA]["ignored_action"]
    assert env.history[-1].action_type == "action" and env.history[-1].agent_index == 1
    # a missing action of the agent whose turn it is counts as none
    env.step({})
    assert env.history[-1].action_type == "none" and env.history[-1].agent_index == 0


def test_simultaneous_records_both_agents_each_turn():
    env = parallel_env(TASK, turn_order="simultaneous")
    env.reset(seed=0)
    assert env.next_agents() == [MIA, LEO]
    env.step({MIA: {"action_type": "speak", "argument": "a"}, LEO: {"action_type": "none", "argument": ""}})
    assert [(t.turn, t.agent_index, t.action_type) for t in env.history] == [(0, 0, "speak"), (0, 1, "none")]


def test_random_order_depends_only_on_seed_and_turn():
    def speakers(seed):
        env = parallel_env(TASK, turn_order="random", max_turns=20)
        env.reset(seed=seed)
        seq = []
        while env.agents:
            seq.append(env.next_agents())
            env.step({a: {"action_type": "speak", "argument": "x"} for a in env.next_agents()})
        return seq

    first = speakers(7)
    assert first == speakers(7) and len(first) == 20
    assert all(len(s) == 1 for s in first) and {s[0] for s in first} == {MIA, LEO}
    assert any(speakers(seed) != first for seed in (8, 9, 10))


def test_max_turns_is_a_truncation():
    """PettingZoo's and Gymnasium's convention: the turn limit is a time limit (truncation);
    SOTOPIA's reason stays in infos."""
    env = parallel_env(TASK, max_turns=4)
    env.reset(seed=0)
    for i in range(4):
        assert env.agents, f"ended early at step {i}"
        _, _, terms, truncs, infos = env.step(
            {a: {"action_type": "speak", "argument": str(i)} for a in env.agents}
        )
    assert all(truncs.values()) and not any(terms.values())
    assert infos[MIA]["termination"] == "max_turns" and env.agents == [] and env.turn == 4
    assert infos[MIA]["available_actions"] == [] and not infos[MIA]["is_my_turn"]
    with pytest.raises(ConfigError, match="reset"):
        env.step({})


def test_leave_ends_episode():
    env = parallel_env(TASK)
    env.reset(seed=0)
    env.step({MIA: {"action_type": "speak", "argument": "hi"}})
    obs, _, terms, _, infos = env.step({LEO: {"action_type": "leave", "argument": ""}})
    assert all(terms.values()) and infos[LEO]["termination"] == "leave" == env.termination
    assert f"{LEO} left the conversation" in obs[MIA]


@pytest.mark.parametrize("max_stale_turns", [0, 2])
def test_more_than_max_stale_none_turns_end_episode(max_stale_turns):
    env = parallel_env(TASK, max_stale_turns=max_stale_turns)
    env.reset(seed=0)
    if max_stale_turns:
        env.step({MIA: {"action_type": "none", "argument": ""}})
    else:
        env.step({MIA: {"action_type": "speak", "argument": "hi"}})
    env.step(
        {a: {"action_type": "speak", "argument": "anyone?"} for a in env.next_agents()}
    )  # resets the count
    for i in range(max_stale_turns):
        env.step({a: {"action_type": "none", "argument": ""} for a in env.agents})
        assert env.agents, f"ended after {i + 1} stale turns"
    _, _, terms, _, infos = env.step({a: {"action_type": "none", "argument": ""} for a in env.agents})
    assert all(terms.values()) and infos[MIA]["termination"] == "stale"


def test_invalid_actions_raise_naming_allowed_ones():
    env = parallel_env(TASK)
    env.reset(seed=0)
    with pytest.raises(DataError, match="allowed: none, speak, non-verbal communication, action, leave"):
        env.step({MIA: {"action_type": "shout", "argument": "HEY"}})
    with pytest.raises(DataError, match="0-4"):
        env.step({MIA: {"action_type": 5, "argument": ""}})
    with pytest.raises(DataError, match="0-4"):
        env.step({LEO: {"action_type": 2.5, "argument": ""}})  # checked even when it is not LEO's turn
    with pytest.raises(DataError, match="unknown agent 'Bob'"):
        env.step({"Bob": {"action_type": "speak", "argument": ""}})
    with pytest.raises(DataError, match="argument"):
        env.step({MIA: {"action_type": "speak", "argument": 3}})
    with pytest.raises(DataError, match="action_type"):
        env.step({MIA: "speak"})
    assert env.turn == 0 and env.history == []  # nothing was applied
    with pytest.raises(ConfigError, match="round-robin, simultaneous, random"):
        parallel_env(TASK, turn_order="alternating")
    with pytest.raises(ConfigError, match="max_turns"):
        parallel_env(TASK, max_turns=0)


@pytest.mark.parametrize(
    "relationship,shown,hidden",
    [
        (0, [], ["Leo Park's background: Leo Park", "occupation: landlord", "Calculating"]),
        (1, ["Leo Park's background: Leo Park."], ["occupation: landlord", "Calculating"]),
        (2, ["occupation: landlord", "Owns the building", "he/him", "45 years old"], ["Calculating"]),
        (3, ["occupation: landlord", "Calculating"], []),
        (5, ["occupation: landlord", "Calculating"], []),
    ],
)
def test_observation_follows_sotopia_visibility(relationship, shown, hidden):
    task = make_task(**RENT_TALK, relationship=relationship)
    env = parallel_env(task)
    obs, _ = env.reset(seed=0)
    mine = obs["Mia Chen"]
    # own side: full profile with the secret, own goal with its inline hint read as text (as SOTOPIA renders it)
    assert "She is about to close the bakery." in mine and "Warm but stubborn" in mine
    assert "Mia Chen's goal: Keep the rent below 2000 you can pay 1900" in mine and "<extra_info>" not in mine
    # partner: goal unknown, secret never shown, profile as the relationship allows
    assert "Leo Park's goal: Unknown" in mine and "Raise the rent" not in mine
    assert "promised the shop" not in mine
    assert "Participants: Mia Chen and Leo Park" in mine and task.scenario.scenario in mine
    for text in shown:
        assert text in mine
    for text in hidden:
        assert text not in mine
    if relationship == 0:
        assert "Leo Park's background: Unknown" in mine
    assert "He already promised the shop to someone else." in obs["Leo Park"]
    assert "about to close" not in obs["Leo Park"]


def test_conversation_rendered_sotopia_style():
    env = parallel_env(TASK, turn_order="simultaneous")
    env.reset(seed=0)
    env.step(
        {
            MIA: {"action_type": "speak", "argument": "The rent is too high."},
            LEO: {"action_type": "non-verbal communication", "argument": "shrugs"},
        }
    )
    obs, *_ = env.step(
        {
            MIA: {"action_type": "action", "argument": "hands over a letter"},
            LEO: {"action_type": "none", "argument": ""},
        }
    )
    expected = (
        'Turn #0: Mia Chen said: "The rent is too high."\n'
        "Turn #0: Leo Park [non-verbal communication] shrugs\n"
        "Turn #1: Mia Chen [action] hands over a letter\n"
        "Turn #1: Leo Park did nothing"
    )
    for agent in (MIA, LEO):
        assert expected in obs[agent] and "You are at Turn #2." in obs[agent]
    assert env.render() == expected


def replay(turn_order, record, n, submitted):
    """A fresh env stepped through the first ``n`` recorded turns with the recorded actions."""
    env = parallel_env(TASK, turn_order=turn_order, max_turns=12)
    obs, infos = env.reset(seed=record.seed, options={"task": TASK})
    target_turn = record.turns[n].turn if n < len(record.turns) else record.turns[-1].turn + 1
    for actions in submitted[:target_turn]:
        obs, _, _, _, infos = env.step(actions)
    return env, obs, infos


@pytest.mark.parametrize("turn_order", ORDERS)
def test_branch_reset_equals_replay(turn_order):
    env = parallel_env(TASK, turn_order=turn_order, max_turns=12)
    record, trace, submitted = play(env, seed=3, policy_seed=11, allow_leave=False)
    assert len(record.turns) >= 6
    branch_points = [
        n for n in range(len(record.turns)) if n == 0 or record.turns[n].turn != record.turns[n - 1].turn
    ]
    for n in branch_points:
        replayed, obs_r, infos_r = replay(turn_order, record, n, submitted)
        branched = parallel_env(TASK, turn_order=turn_order, max_turns=12)
        obs_b, infos_b = branched.reset(options={"history": record, "branch_turn": n})
        assert obs_b == obs_r, f"observations differ at branch turn {n}"
        assert infos_b == infos_r
        assert branched.turn == replayed.turn == record.turns[n].turn
        assert branched.next_agents() == replayed.next_agents()
        assert [t.to_dict() for t in branched.history] == [t.to_dict() for t in record.turns[:n]]
        # and the continuation is the same too
        rng_a, rng_b = random.Random(n), random.Random(n)
        while replayed.agents:
            a = scripted_actions(replayed, rng_a)
            b = scripted_actions(branched, rng_b)
            assert a == b
            step_r, step_b = replayed.step(a), branched.step(b)
            assert step_r[0] == step_b[0] and step_r[4] == step_b[4]
        assert branched.termination == replayed.termination
        branch_record = branched.to_record()
        assert branch_record.parent_episode_id == record.episode_id and branch_record.branch_turn == n
        assert branch_record.seed == record.seed


def test_branch_reset_errors():
    env = parallel_env(TASK, max_turns=6)
    record, _, _ = play(env, seed=0, allow_leave=False)
    with pytest.raises(ConfigError, match="already ended"):
        env.reset(options={"history": record, "branch_turn": len(record.turns)})
    with pytest.raises(ConfigError, match=r"branch_turn must be an integer in \[0, 6\]"):
        env.reset(options={"history": record, "branch_turn": 7})
    with pytest.raises(ConfigError, match="turn_order='round-robin'"):
        parallel_env(TASK, turn_order="random").reset(options={"history": record, "branch_turn": 2})
    with pytest.warns(UserWarning, match="max_turns=6 but this env uses 20"):
        parallel_env(TASK).reset(options={"history": record, "branch_turn": 2})
    wrong_seat = [Turn(0, 1, LEO, "speak", "I go first")]
    with pytest.raises(DataError, match="seat"):
        env.reset(options={"history": wrong_seat})
    sim = parallel_env(TASK, turn_order="simultaneous")
    sim_record, _, _ = play(sim, seed=0, allow_leave=False)
    with pytest.raises(ConfigError, match="branch at 2"):
        sim.reset(options={"history": sim_record, "branch_turn": 3})


def test_history_as_turn_list_continues_episode():
    env = parallel_env(TASK)
    turns = [Turn(0, 0, MIA, "speak", "hi"), Turn(1, 1, LEO, "none")]
    obs, infos = env.reset(options={"history": turns})
    assert env.turn == 2 and env.next_agents() == [MIA] and infos[MIA]["is_my_turn"]
    assert 'Mia Chen said: "hi"' in obs[LEO] and "Leo Park did nothing" in obs[MIA]
    assert env.to_record().branch_turn is None


@pytest.mark.parametrize("turn_order", ORDERS)
def test_multi_step_determinism(turn_order):
    record_a, trace_a, _ = play(parallel_env(TASK, turn_order=turn_order), seed=5, policy_seed=2)
    record_b, trace_b, _ = play(parallel_env(TASK, turn_order=turn_order), seed=5, policy_seed=2)
    assert trace_a == trace_b and len(trace_a) > 2
    assert [t.to_dict() for t in record_a.turns] == [t.to_dict() for t in record_b.turns]
    # seeding once makes the following unseeded resets reproducible as well
    env_c, env_d = parallel_env(TASK, turn_order=turn_order), parallel_env(TASK, turn_order=turn_order)
    env_c.reset(seed=9), env_d.reset(seed=9)
    assert env_c.reset()[0] == env_d.reset()[0] and env_c.seed == env_d.seed


class CountingJudge:
    """A rule-based evaluator for tests: goal = number of the agent's speak turns (capped at 10),
    relationship = -1 if the agent left, else 1."""

    name = "counting-judge"

    def __init__(self, fail=False):
        self.fail, self.calls = fail, []

    def evaluate(self, record):
        self.calls.append(record)
        if self.fail:
            return EpisodeEvaluation.failed(self.name, "judge timed out")
        agents = []
        for seat in (0, 1):
            mine = [record.turns[i] for i in record.agent_turns(seat)]
            scores = {
                "believability": 5,
                "relationship": -1 if any(t.action_type == "leave" for t in mine) else 1,
                "knowledge": 0,
                "secret": 0,
                "social_rules": 0,
                "financial_and_material_benefits": 0,
                "goal": min(10, sum(t.action_type == "speak" for t in mine)),
            }
            agents.append(AgentEvaluation(scores=scores, reasoning={"goal": f"{scores['goal']} speeches"}))
        return EpisodeEvaluation(agents=agents, judge=self.name)


def test_reward_at_termination_from_evaluator():
    judge = CountingJudge()
    env = parallel_env(TASK, max_turns=5, evaluator=judge)
    env.reset(seed=0)
    script = [(MIA, "speak"), (LEO, "speak"), (MIA, "speak"), (LEO, "action"), (MIA, "speak")]
    for agent, kind in script:
        _, rewards, terms, truncs, infos = env.step({agent: {"action_type": kind, "argument": "..."}})
        if not all(terms.values()) and not all(truncs.values()):
            assert rewards == {MIA: 0.0, LEO: 0.0} and judge.calls == []
    assert rewards == {MIA: 3.0, LEO: 1.0} and len(judge.calls) == 1
    assert infos[MIA]["evaluation"]["agents"][0]["scores"]["goal"] == 3.0
    assert len(judge.calls[0].turns) == 5 and judge.calls[0].termination == "max_turns"
    record = env.to_record(models=["m0", "m1"], sampling=[{"temperature": 1.0}, {"temperature": 0.7}])
    assert record.evaluated and record.score(0) == 3.0 and record.models == ["m0", "m1"]
    again = EpisodeRecord.from_dict(record.to_dict())
    assert again.to_dict() == record.to_dict()

    weighted = parallel_env(
        TASK, max_turns=2, evaluator=CountingJudge(), reward_weights={"goal": 0.5, "relationship": 2.0}
    )
    weighted.reset(seed=0)
    weighted.step({MIA: {"action_type": "speak", "argument": "hi"}})
    _, rewards, *_ = weighted.step({LEO: {"action_type": "leave", "argument": ""}})
    assert rewards == {MIA: 0.5 * 1 + 2.0 * 1, LEO: 0.5 * 0 + 2.0 * -1}
    with pytest.raises(DataError, match="unknown dimension"):
        parallel_env(TASK, reward_weights=RewardWeights({"charm": 1.0}))


def test_failed_judge_gives_nan_reward_not_zero():
    env = parallel_env(TASK, max_turns=1, evaluator=CountingJudge(fail=True))
    env.reset(seed=0)
    _, rewards, _, _, infos = env.step({MIA: {"action_type": "speak", "argument": "hi"}})
    assert all(math.isnan(r) for r in rewards.values())
    assert infos[MIA]["evaluation"]["evaluated"] is False and not env.to_record().evaluated


def test_reset_with_task_positional_and_option():
    other = make_task(**RENT_TALK, relationship=3)
    other.profiles = (Profile(pk="p-ana", first_name="Ana", last_name="Silva"), other.profiles[1])
    env = parallel_env(TASK)
    env.reset(other)
    assert env.agents == ["Ana Silva", LEO] and env.possible_agents == ["Ana Silva", LEO]
    env.reset(seed=1, options={"task": TASK})
    assert env.agents == [MIA, LEO] and env.task is TASK
    with pytest.warns(UserWarning, match="branch_trun"):
        env.reset(seed=1, options={"branch_trun": 3})
    with pytest.raises(ConfigError, match="needs a 'history'"):
        env.reset(options={"branch_turn": 1})


@pytest.mark.parametrize("turn_order", ORDERS)
def test_pettingzoo_seed_test(turn_order):
    from pettingzoo.test import parallel_seed_test

    parallel_seed_test(lambda: parallel_env(TASK, turn_order=turn_order), num_cycles=30)


def test_branch_keeps_the_stale_count():
    # two stale turns in the history: one more none ends the episode, after the branch as after a replay
    turns = [Turn(0, 0, MIA, "speak", "hi"), Turn(1, 1, LEO, "none"), Turn(2, 0, MIA, "none")]
    env = parallel_env(TASK)
    env.reset(options={"history": turns})
    _, _, terms, _, infos = env.step({LEO: {"action_type": "none", "argument": ""}})
    assert all(terms.values()) and infos[LEO]["termination"] == "stale"


@pytest.mark.parametrize("turn_order", ORDERS)
def test_incremental_termination_matches_whole_history_rule(turn_order):
    # the env keeps counters step by step; RuleBasedTermination.reason_for_history recomputes from
    # the turns alone: both must agree on why and where every episode ended
    reasons = set()
    for seed in range(30):
        env = parallel_env(TASK, turn_order=turn_order, max_turns=10, max_stale_turns=1)
        env.reset(seed=seed)
        rng = random.Random(seed)
        while env.agents:
            kinds = ["none"] * 4 + ["speak"] * 4 + ["leave"]
            env.step({a: {"action_type": rng.choice(kinds), "argument": "x"} for a in env.next_agents()})
        record = env.to_record()
        reason, index = env.termination_rules.reason_for_history(record.turns)
        assert (reason, index) == (record.termination, len(record.turns) - 1)
        reasons.add(reason)
    assert reasons == {"leave", "stale", "max_turns"}


def test_history_of_another_task_is_refused():
    """A branch of task A's record on task B would put A's lines in B's characters' mouths and
    record the wrong parent: refused, naming both tasks (or the speaker that does not fit)."""
    from sotopia_env import builtin_tasks

    env = parallel_env(TASK, max_turns=6)
    record, _, _ = play(env, seed=0, allow_leave=False)
    other = builtin_tasks("test")[0]
    with pytest.raises(ConfigError, match=f"of task {TASK.pk!r} .*not of task {other.pk!r}"):
        parallel_env(other).reset(options={"task": other, "history": record, "branch_turn": 2})
    with pytest.raises(ConfigError, match=f"spoken by {MIA!r} in seat 0, but seat 0 of task {other.pk!r}"):
        parallel_env(other).reset(options={"history": record.turns[:2]})
    obs, _ = env.reset(options={"history": record, "branch_turn": 2})   # its own task: fine
    assert env.turn == 2
