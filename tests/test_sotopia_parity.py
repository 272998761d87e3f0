"""prompt_style="sotopia" against SOTOPIA's own code (sotopia 0.1.5), over real HTTP.

Both systems play the same scripted episodes against the local OpenAI-compatible server:
SOTOPIA through ``sotopia.server.arun_one_episode`` (its env, its LLMAgent, its terminal
EpisodeLLMEvaluator, models given as ``custom/<name>@<base url>``), ours through
``agents.run_episodes`` with LiteLLM policies and the LLM judge in the sotopia style. The server
answers both with the same scripted actions and evaluation; the test asserts that every request
our side sends (each agent turn, then the evaluator) carries exactly the messages SOTOPIA's
sends for the same state, and that both read the evaluation to the same scores.

SOTOPIA pins ``pettingzoo==1.25.0`` and ``openai<2``, so CI runs this file in a venv of its own
(``.ci/run``, ``SOTOPIA_PARITY_REQUIRED=1`` turns the skip into a failure there).
"""
from __future__ import annotations

import asyncio
import json
import os

import pytest

if os.environ.get("SOTOPIA_PARITY_REQUIRED"):
    import sotopia  # noqa: F401 - must import where parity is required
else:
    pytest.importorskip("sotopia", reason="the sotopia package is not installed (pip install -e '.[sotopia]')")

os.environ.setdefault("SOTOPIA_STORAGE_BACKEND", "local")

from agents.formatter import ConversationFormat  # noqa: E402
from agents.judge import LLMJudge  # noqa: E402
from agents.litellm_policy import LiteLLMPolicy  # noqa: E402
from agents.llm_client import drain_logging  # noqa: E402
from agents.local_server import ScriptedOpenAIServer  # noqa: E402
from agents.runner import run_episodes, self_chat_jobs  # noqa: E402
from sotopia_env import DIMENSIONS, Relationship, builtin_tasks  # noqa: E402
from sotopia_env.profiles import Task  # noqa: E402
from sotopia_env.render import sotopia_api  # noqa: E402
from tests.factories import make_task  # noqa: E402

SCORES = {"believability": 8, "relationship": 2, "knowledge": 5, "secret": -1, "social_rules": 0,
          "financial_and_material_benefits": 1, "goal": 7}


def evaluation_answer() -> str:
    agent = {d: [f"reason about {d}", SCORES[d]] for d in DIMENSIONS}
    agent_2 = {**agent, "goal": ["the other got less", 3]}
    return json.dumps({"evaluations": {"agent_1": agent, "agent_2": agent_2}})


def parity_task(relationship: Relationship, goals: list[str], scenario: str) -> Task:
    """A built-in task's two profiles in a scenario written here."""
    return make_task(f"parity-task-{int(relationship)}", scenario_pk=f"parity-{int(relationship)}",
                     codename=f"parity_{relationship.name}", scenario=scenario, goals=goals, relationship=relationship,
                     profiles=builtin_tasks("test")[0].profiles)


GOALS = [
    "Get the logo for under $1,200 <extra_info>Another designer quoted $900.</extra_info> "
    "<strategy_hint>Mention the long-term work you can offer.</strategy_hint>",
    "Get at least $1,800 <clarification_hint>You may accept $1,500 with a portfolio credit.</clarification_hint>"
    " <strategy_hint>Stay friendly but firm",  # never closed, as in 14 of SOTOPIA's goals
]

SCRIPTS = {
    # first turn, several action types, quotes and an ampersand, then a leave
    Relationship.stranger: [("speak", 'Hi, I\'m "Ravi" & I run the place.'), ("non-verbal communication", "nods"),
                            ("action", "slides a contract across the table"), ("speak", "Shall we sign?"),
                            ("leave", "")],
    Relationship.know_by_name: [("speak", "Good to see you again."), ("speak", "Likewise!"), ("leave", "")],
    Relationship.acquaintance: [("speak", "About the menu design..."), ("action", "opens a laptop"),
                                ("speak", "Here are drafts, ü and é included."), ("speak", "Nice."),
                                ("speak", "So $1,500?"), ("speak", "Deal.")],  # runs to the turn limit
    Relationship.friend: [("speak", "Hey friend!"), ("leave", "")],
    Relationship.romantic_relationship: [("non-verbal communication", "smiles"), ("speak", "Dinner later?"),
                                         ("speak", "Yes."), ("leave", "")],
    Relationship.family_member: [("speak", "Mom asked about the shop."), ("speak", "Tell her it's fine."),
                                 ("speak", "Will do."), ("speak", "Bye."), ("leave", "")],
}
MAX_TURNS = 6


class Script:
    """The server's answers: the scripted actions in request order per model, then the evaluation."""

    def __init__(self, actions):
        self.actions = list(actions)
        self.served = {"agent": 0}

    def __call__(self, body: dict) -> str:
        if body["model"].endswith("judge"):
            return evaluation_answer()
        k = self.served["agent"]
        self.served["agent"] += 1
        action_type, argument = self.actions[k]
        return json.dumps({"action_type": action_type, "argument": argument})


def play_sotopia(task: Task, actions) -> list[dict]:
    """One episode through SOTOPIA's own code; returns the chat bodies the server received."""
    s = sotopia_api()
    from sotopia.agents import LLMAgent
    from sotopia.database import AgentProfile, EnvironmentProfile
    from sotopia.envs.evaluators import RuleBasedTerminatedEvaluator
    from sotopia.server import arun_one_episode

    os.environ.setdefault("CUSTOM_API_KEY", "EMPTY")
    with ScriptedOpenAIServer(Script(actions)) as srv:
        profile = EnvironmentProfile(pk=task.scenario.pk, codename=task.scenario.codename,
                                     scenario=task.scenario.scenario, agent_goals=list(task.scenario.agent_goals),
                                     relationship=s.RelationshipType(int(task.scenario.relationship)))
        judge = s.EpisodeLLMEvaluator(f"custom/judge@{srv.base_url}", s.EvaluationForAgents[s.SotopiaDimensions])
        rules = RuleBasedTerminatedEvaluator(max_turn_number=MAX_TURNS, max_stale_turn=2)
        env = s.parallel.ParallelSotopiaEnv(env_profile=profile, action_order="round-robin", evaluators=[rules],
                                            terminal_evaluators=[judge])
        # SOTOPIA lists the action types in a set's order, which changes with the hash seed; fix ours.
        env.available_action_types = ["none", "speak", "non-verbal communication", "action", "leave"]
        agents = [LLMAgent(agent_profile=AgentProfile(**{k: v for k, v in p.to_dict().items()
                                                        if k in s.BaseAgentProfile.model_fields}),
                           model_name=f"custom/agent@{srv.base_url}") for p in task.profiles]
        async def episode():
            await arun_one_episode(env, agents, push_to_db=False)
            await drain_logging()  # LiteLLM 1.80 hangs at loop shutdown with queued log handlers

        asyncio.run(episode())
        return list(srv.requests)


def play_ours(task: Task, actions):
    """The same episode through our runner, env, policy and judge in the sotopia style."""
    with ScriptedOpenAIServer(Script(actions)) as srv:
        policy = LiteLLMPolicy("openai/agent", api_base=srv.base_url, api_key="EMPTY",
                               fmt=ConversationFormat(prompt_style="sotopia"))
        judge = LLMJudge("openai/judge", api_base=srv.base_url, api_key="EMPTY", prompt_style="sotopia")
        jobs = self_chat_jobs([task], policy, max_turns=MAX_TURNS, prompt_style="sotopia")
        records = run_episodes(jobs, None, judge, concurrency=1, progress=False)
        return list(srv.requests), records[0]


@pytest.mark.parametrize("relationship", list(Relationship), ids=lambda r: r.name)
def test_prompts_equal_sotopias_own(relationship):
    task = parity_task(relationship, GOALS, "Two people meet in a café & talk about a <b>design</b> job "
                                          "for the \"grand\" reopening.")
    script = SCRIPTS[relationship]
    theirs = play_sotopia(task, script)
    ours, record = play_ours(task, script)

    def split(requests):
        return ([r["messages"] for r in requests if r["model"] == "agent"],
                [r["messages"] for r in requests if r["model"] == "judge"])

    their_turns, their_judge = split(theirs)
    our_turns, our_judge = split(ours)
    assert len(our_turns) == len(their_turns) == len(record.turns)
    for k, (a, b) in enumerate(zip(our_turns, their_turns)):
        assert a == b, f"turn {k}: our action prompt differs from SOTOPIA's"
    assert len(their_judge) == len(our_judge) == 1
    assert our_judge[0] == their_judge[0]
    # the evaluation reads as SOTOPIA reads it: agent_1 -> seat 0, agent_2 -> seat 1
    scores = [a.scores for a in record.evaluation.agents]
    assert scores[0] == {d: float(v) for d, v in SCORES.items()}
    assert scores[1]["goal"] == 3.0
    assert record.termination == ("leave" if script[-1][0] == "leave" else "max_turns")


def test_first_turn_prompt_shows_no_history_and_the_owners_goal_only():
    """The first state: SOTOPIA's prompt holds the background, the turn number 0, and the goal
    markup rendered for its owner (tags gone, text kept, the unclosed tag included)."""
    from sotopia_env.render import sotopia_action_prompt

    task = parity_task(Relationship.friend, GOALS, "A café.")
    text = sotopia_action_prompt(task, 1, [], 0)
    assert "You are at Turn #0." in text and "Conversation Starts:" in text
    assert "You may accept $1,500 with a portfolio credit." in text and "Stay friendly but firm" in text
    assert "<clarification_hint>" not in text and "Another designer quoted" not in text


@pytest.mark.slow
def test_benchmark_runs_with_sotopias_prompts_end_to_end(tmp_path):
    """``python -m benchmarks.sotopia prompt_style=sotopia`` on the embedded model, judged over HTTP
    by the local server: the judge receives SOTOPIA's evaluator prompt for the stored episode and
    the results say which prompt style produced them."""
    import subprocess
    import sys

    pytest.importorskip("torch")
    from sotopia_env import EpisodeStore
    from sotopia_env.render import sotopia_evaluator_prompt

    out = tmp_path / "bench"
    with ScriptedOpenAIServer(lambda body: evaluation_answer()) as srv:
        env = {**os.environ, "OPENAI_API_KEY": "sk-parity-test"}
        proc = subprocess.run(
            [sys.executable, "-m", "benchmarks.sotopia", "prompt_style=sotopia", "judge=openai/judge",
             f"judge_api_base={srv.base_url}", "limit=1", "max_turns=2", "max_new_tokens=24",
             f"output_dir={out}", "progress=false"],
            capture_output=True, text=True, env=env, timeout=900)
        requests = list(srv.requests)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "prompt style: sotopia" in proc.stdout and "Prompt style: `sotopia`" in (out / "results.md").read_text()
    records = list(EpisodeStore(out / "episodes.jsonl"))
    assert len(records) == 1 and records[0].evaluated and len(records[0].turns) == 2
    assert records[0].tags["format"]["prompt_style"] == "sotopia"
    assert [r["messages"] for r in requests] == [
        [{"role": "user", "content": sotopia_evaluator_prompt(records[0].task, records[0].turns)}]]
    assert records[0].evaluation.agents[0].scores == {d: float(v) for d, v in SCORES.items()}
