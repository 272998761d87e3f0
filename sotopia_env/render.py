"""The one renderer of SOTOPIA text: actions, turns, profiles, backgrounds, goals, the agent's
prompt and the judge's view of an episode. The env's observations, the policies' prompts
(``agents.formatter``) and the judges (``agents.judge``) all render through this module.

Two prompt styles, one switch (``prompt_style``):

* ``native`` (the default): our wording, with SOTOPIA's semantics. The background names the
  participants in seat order, shows the agent's own profile (secret included), the partner's
  profile as the relationship allows (stranger: nothing; know_by_name: the name; acquaintance:
  age, gender, pronouns, occupation, public info; friend, romantic partner, family: also the
  personality; never the secret), its own goal and ``Unknown`` for the partner's. Goal markup
  (``<extra_info>``, ``<clarification_hint>``, ``<strategy_hint>``) reads as plain text to the
  goal's owner and the judge, as SOTOPIA renders it. Profile fields SOTOPIA never shows (Big
  Five, moral and Schwartz values, decision style, MBTI) are not shown.
* ``sotopia``: byte for byte what SOTOPIA 0.1.5 sends to the model for the same state (the
  agent's action prompt and the evaluator's prompt). The text is not ours: templates, rubric,
  format instructions and the XML rendering of goals and backgrounds are read from the
  installed ``sotopia`` package at run time (``pip install -e ".[sotopia]"``). SOTOPIA 0.1.5
  shows the partner's background as ``Unknown`` at every relationship level, and lists the
  action types in the order of a Python set; we list them in ``ACTION_TYPES`` order.
"""
from __future__ import annotations

import ast
import functools
import inspect
import json
import re
import types
from collections.abc import Sequence
from typing import Any

from .episode import ACTION_TYPES, Turn
from .errors import ConfigError
from .profiles import VISIBLE_PROFILE_FIELDS, Profile, Relationship, Task

PROMPT_STYLES: tuple[str, ...] = ("native", "sotopia")
GOAL_TAGS: tuple[str, ...] = ("extra_info", "clarification_hint", "strategy_hint")
OMITTED_NOTE = "(Earlier turns of the conversation are omitted.)"

# How an action reads in a conversation (SOTOPIA's AgentAction.to_natural_language).
ACTION_TEXT: dict[str, str] = {
    "none": "did nothing",
    "speak": 'said: "{}"',
    "non-verbal communication": "[non-verbal communication] {}",
    "action": "[action] {}",
    "leave": "left the conversation",
}


def check_prompt_style(style: Any, option: str = "prompt_style") -> str:
    """``style`` as a plain string (an Enum from a hydra config is accepted); ConfigError otherwise."""
    style = getattr(style, "value", style)
    if style not in PROMPT_STYLES:
        raise ConfigError(f"{option} {style!r} is not allowed; allowed: {', '.join(PROMPT_STYLES)}")
    if style == "sotopia":
        sotopia_api()  # fail at configuration time, not at the first prompt
    return style


# ---------------------------------------------------------------------------------------------
# Actions and turns
# ---------------------------------------------------------------------------------------------


def action_text(action_type: str, argument: str) -> str:
    """An action as the conversation shows it: ``said: "Hi"``, ``[action] waves``, ..."""
    return ACTION_TEXT[action_type].format(argument)


def action_json(action_type: str, argument: str) -> str:
    """An action as a model writes it: SOTOPIA's JSON action ``{"action_type": ..., "argument": ...}``."""
    return json.dumps({"action_type": action_type, "argument": argument}, ensure_ascii=False)


def turn_line(turn: Turn, name: str | None = None) -> str:
    """One line of the conversation: ``Turn #3: Mia Chen said: "Hi"``."""
    return f"Turn #{turn.turn}: {name or turn.speaker} {action_text(turn.action_type, turn.argument)}"


def conversation(task: Task, turns: Sequence[Turn], *, skip_none: bool = False) -> str:
    """The conversation, one turn a line; ``skip_none`` leaves out turns where someone did nothing."""
    names = task.agent_names
    return "\n".join(turn_line(t, names[t.agent_index]) for t in turns
                     if not (skip_none and t.action_type == "none"))


# ---------------------------------------------------------------------------------------------
# Native style: profiles, goals, backgrounds
# ---------------------------------------------------------------------------------------------

_GOAL_TAG = re.compile(r"</?(?:{})\s*>".format("|".join(GOAL_TAGS)))

# The profile fields SOTOPIA puts in a background, and how each reads in ours.
_PROFILE_TEXT: tuple[tuple[str, str], ...] = (
    ("age", "{} years old"),
    ("gender", "gender: {}"),
    ("gender_pronoun", "pronouns: {}"),
    ("occupation", "occupation: {}"),
    ("public_info", "public info: {}"),
    ("personality_and_values", "personality and values: {}"),
    ("secret", "secret: {}"),
)
_OWN_FIELDS = ("first_name", "last_name") + tuple(f for f, _ in _PROFILE_TEXT)


def goal_text(goal: str) -> str:
    """A goal as its owner and the judge read it: SOTOPIA's goal tags removed, their text kept
    (an unclosed tag runs to the end of the goal, as SOTOPIA's XML recovery reads it)."""
    return _GOAL_TAG.sub("", goal)


def profile_text(profile: Profile, fields: Sequence[str] = _OWN_FIELDS) -> str:
    """A profile restricted to ``fields`` (its owner's view, secret included, by default)."""
    shown = set(fields)
    if not shown:
        return "Unknown"
    parts = [profile.name if "first_name" in shown else "Name unknown"]
    for key, text in _PROFILE_TEXT:
        value = getattr(profile, key) if key in shown else None
        if value:
            parts.append(text.format(str(value).rstrip(". ")))
    return "; ".join(parts) + "."


def partner_fields(relationship: Relationship) -> tuple[str, ...]:
    """What an agent may see of its partner's profile at this relationship level."""
    return tuple(f for f in VISIBLE_PROFILE_FIELDS[relationship] if f in _OWN_FIELDS)


def _participants(names: Sequence[str]) -> str:
    return f"{names[0]} and {names[1]}"


def background(task: Task, viewer: int | None, style: str = "native") -> str:
    """What ``viewer`` (a seat, or None for the judge, who sees everything) knows before the
    conversation: scenario, participants, backgrounds and goals."""
    if style == "sotopia":
        return _sotopia_background(task, viewer)
    names = task.agent_names
    rel = task.scenario.relationship
    lines = ["Here is the context of this interaction:", f"Scenario: {task.scenario.scenario}",
             f"Participants: {_participants(names)}"]
    for seat, profile in enumerate(task.profiles):
        shown = _OWN_FIELDS if viewer is None or viewer == seat else partner_fields(rel)
        lines.append(f"{profile.name}'s background: {profile_text(profile, shown)}")
    for seat, profile in enumerate(task.profiles):
        goal = goal_text(task.scenario.agent_goals[seat]) if viewer is None or viewer == seat else "Unknown"
        lines.append(f"{profile.name}'s goal: {goal}")
    return "\n".join(lines)


def agent_instructions(name: str, max_turns: int) -> str:
    """The native style's instructions to the agent: who it plays, the action format, when to leave."""
    return (
        f"Imagine you are {name}, your task is to act/speak as {name} would, keeping in mind {name}'s "
        f"social goal. Only you can see {name}'s goal and secret.\n"
        f"The conversation lasts at most {max_turns} turns. Answer each turn with exactly one JSON object "
        f'{{"action_type": ..., "argument": ...}} and nothing else. "action_type" is one of "speak" '
        f'(argument: what you say), "non-verbal communication" (argument: the gesture), "action" '
        f'(argument: the physical action), "leave" or "none" (do nothing). Leave when you have reached '
        f"your goal, when the conversation makes you uncomfortable or bores you, or when there is "
        f"another reason to stop."
    )


# ---------------------------------------------------------------------------------------------
# The environment's observation
# ---------------------------------------------------------------------------------------------


def observation(task: Task, seat: int, turns: Sequence[Turn], turn: int, *, speakers: Sequence[int],
                termination: str | None, style: str = "native") -> str:
    """What ``seat`` observes before turn ``turn``: its background, the conversation so far and
    whose turn it is (native); or the history SOTOPIA's agent has received so far (sotopia)."""
    if style == "sotopia":
        return sotopia_history(task, seat, turns)
    talk = conversation(task, turns)
    text = background(task, seat) + "\n\nConversation so far:\n" + (talk or "(nothing yet)")
    if termination is not None:
        return text + f"\n\nThe conversation has ended ({termination}) after {turn} turns."
    if seat in speakers:
        return text + (f"\n\nYou are at Turn #{turn}. It is your turn: speak, non-verbal communication, "
                       f"action, leave or none.")
    other = task.agent_names[1 - seat]
    return text + f"\n\nYou are at Turn #{turn}. It is {other}'s turn; you can only do nothing (none)."


# ---------------------------------------------------------------------------------------------
# The judge's view (native)
# ---------------------------------------------------------------------------------------------


def episode_text(task: Task, turns: Sequence[Turn], *, max_turn_lines: int | None = None,
                 style: str = "native") -> str:
    """The episode as the judge sees it: both backgrounds and goals in full, then the
    conversation without the turns where someone did nothing."""
    if style == "sotopia":
        return sotopia_judge_history(task, turns)
    talk = [turn_line(t, task.agent_names[t.agent_index]) for t in turns if t.action_type != "none"]
    if max_turn_lines is not None and len(talk) > max_turn_lines:
        talk = ["(earlier turns omitted)"] + talk[len(talk) - max_turn_lines:]
    return (background(task, None) + "\n\nConversation:\n"
            + ("\n".join(talk) if talk else "(nobody said anything)"))


# ---------------------------------------------------------------------------------------------
# SOTOPIA style: SOTOPIA's own text, read from the installed package
# ---------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def sotopia_api():
    """SOTOPIA's modules, imported once; ConfigError naming the extra when it is not installed."""
    import contextlib
    import io
    import os
    import warnings

    try:
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        os.environ.setdefault("SOTOPIA_STORAGE_BACKEND", "local")  # we only render text: no Redis
        # SOTOPIA announces its storage backend on stdout when imported; keep our streams clean.
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            import sotopia.envs.parallel as parallel
            from sotopia.database import SotopiaDimensions
            from sotopia.database.persistent_profile import BaseAgentProfile, RelationshipType
            from sotopia.envs.evaluators import EpisodeLLMEvaluator, EvaluationForAgents
            from sotopia.generation_utils import generate
            from sotopia.generation_utils.output_parsers import PydanticOutputParser
            from sotopia.messages import AgentAction, Observation, ScriptBackground, SimpleMessage
            from sotopia.utils import format_docstring
    except ImportError as e:
        raise ConfigError(
            f"prompt_style=sotopia reads SOTOPIA's prompts from the sotopia package, which cannot be "
            f"imported ({e}); install it with: pip install -e \".[sotopia]\" (sotopia==0.1.5)") from None
    from types import SimpleNamespace

    return SimpleNamespace(
        parallel=parallel, generate=generate, SotopiaDimensions=SotopiaDimensions,
        BaseAgentProfile=BaseAgentProfile, RelationshipType=RelationshipType,
        EpisodeLLMEvaluator=EpisodeLLMEvaluator, EvaluationForAgents=EvaluationForAgents,
        PydanticOutputParser=PydanticOutputParser, AgentAction=AgentAction, Observation=Observation,
        ScriptBackground=ScriptBackground, SimpleMessage=SimpleMessage, format_docstring=format_docstring)


def _function_node(module: types.ModuleType, name: str) -> ast.AST:
    """The definition of ``name`` (``function`` or ``Class.method``) in ``module``'s source."""
    source = ast.parse(inspect.getsource(module))
    tree: ast.AST | None = source
    *owner, leaf = name.split(".")
    if owner:
        tree = next((n for n in ast.walk(source) if isinstance(n, ast.ClassDef) and n.name == owner[0]), None)
    for node in ast.walk(tree) if tree is not None else ():
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == leaf:
            return node
    raise ConfigError(f"the installed sotopia package has no {module.__name__}.{name}; prompt_style=sotopia "
                      f"is tested with sotopia==0.1.5")


@functools.lru_cache(maxsize=1)
def sotopia_action_template() -> str:
    """The agent's template in ``sotopia.generation_utils.generate.agenerate_action`` (the branch
    taken when the model plays the agent, ``script_like=False``)."""
    s = sotopia_api()
    fn = _function_node(s.generate, "agenerate_action")
    for node in ast.walk(fn):
        if (isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "script_like"
                and node.orelse and isinstance(node.orelse[0], ast.Assign)
                and isinstance(node.orelse[0].value, ast.Constant)
                and isinstance(node.orelse[0].value.value, str)):
            return node.orelse[0].value.value
    raise ConfigError("cannot find the agent's template in the installed sotopia package; prompt_style=sotopia "
                      "is tested with sotopia==0.1.5")


@functools.lru_cache(maxsize=1)
def sotopia_evaluator_template() -> str:
    """The template of ``sotopia.envs.evaluators.EpisodeLLMEvaluator.__acall__``."""
    import sotopia.envs.evaluators as evaluators

    fn = _function_node(evaluators, "EpisodeLLMEvaluator.__acall__")
    for node in ast.walk(fn):
        if (isinstance(node, ast.keyword) and node.arg == "template" and isinstance(node.value, ast.Constant)
                and isinstance(node.value.value, str)):
            return node.value.value
    raise ConfigError("cannot find the evaluator's template in the installed sotopia package; "
                      "prompt_style=sotopia is tested with sotopia==0.1.5")


def _fill(template: str, values: dict[str, str]) -> str:
    """SOTOPIA's ``agenerate``: dedent the template, then replace each ``{key}`` in order."""
    text = sotopia_api().format_docstring(template)
    for key, value in values.items():
        text = text.replace(f"{{{key}}}", str(value))
    return text


def _sotopia_profile(profile: Profile) -> Any:
    s = sotopia_api()
    return s.BaseAgentProfile(**{k: v for k, v in profile.to_dict().items()
                                 if k in s.BaseAgentProfile.model_fields})


def _sotopia_raw(task: Task) -> tuple[list[str], list[str]]:
    """The raw (marked-up) bios and goals of ``ParallelSotopiaEnv.reset``."""
    s = sotopia_api()
    rel = s.RelationshipType(int(task.scenario.relationship))
    bios = [s.parallel.get_bio(rel, _sotopia_profile(p), agent_id=i) for i, p in enumerate(task.profiles)]
    goals = [f"<root viewer='agent_{i}'>{g}</root>" for i, g in enumerate(task.scenario.agent_goals)]
    return bios, goals


def _sotopia_script_background(task: Task, viewer: int | None) -> Any:
    """The ScriptBackground ``ParallelSotopiaEnv.reset`` builds: the environment's (``viewer``
    None: every bio and goal rendered in full) or agent ``viewer``'s (the others' "Unknown")."""
    s = sotopia_api()
    bios, goals = _sotopia_raw(task)
    if viewer is None:
        env = s.parallel.render_text_for_environment
        return s.ScriptBackground(scenario=env(task.scenario.scenario), agent_names=task.agent_names,
                                  agent_backgrounds=[env(b) for b in bios], agent_goals=[env(g) for g in goals])
    agent = s.parallel.render_text_for_agent
    hidden = [g if j == viewer else "Unknown" for j, g in enumerate(goals)]
    return s.ScriptBackground(scenario=agent(task.scenario.scenario, viewer), agent_names=task.agent_names,
                              agent_backgrounds=[agent(b, viewer) if j == viewer else "Unknown"
                                                 for j, b in enumerate(bios)],
                              agent_goals=[agent(g, viewer) for g in hidden])


def _sotopia_background(task: Task, viewer: int | None) -> str:
    return _sotopia_script_background(task, viewer).to_natural_language()


def _sotopia_steps(task: Task, turns: Sequence[Turn]) -> list[tuple[int, dict[str, Any]]]:
    """The env's turns as SOTOPIA's steps: ``(turn counter, {name: AgentAction})`` in seat order
    (a seat without a turn did nothing)."""
    s = sotopia_api()
    steps: list[tuple[int, dict[str, Any]]] = []
    for t in turns:
        if not steps or steps[-1][0] != t.turn:
            steps.append((t.turn, {name: s.AgentAction(action_type="none", argument="")
                                   for name in task.agent_names}))
        steps[-1][1][task.agent_names[t.agent_index]] = s.AgentAction(action_type=t.action_type,
                                                                       argument=t.argument)
    return steps


def sotopia_history(task: Task, seat: int, turns: Sequence[Turn]) -> str:
    """The ``history`` SOTOPIA's LLMAgent sends after ``turns``: every observation it has
    received, the background first, then one line per step (``Turn #k: <what was done>``)."""
    s = sotopia_api()
    observations = [s.Observation(last_turn=_sotopia_background(task, seat), turn_number=0,
                                  available_actions=list(ACTION_TYPES))]
    for turn, actions in _sotopia_steps(task, turns):
        text = s.parallel.render_text_for_agent(s.parallel._actions_to_natural_language(actions), agent_id=seat)
        observations.append(s.Observation(last_turn=text, turn_number=turn + 1, available_actions=["none"]))
    return "\n".join(o.to_natural_language() for o in observations)


def sotopia_action_prompt(task: Task, seat: int, turns: Sequence[Turn], turn: int,
                          action_types: Sequence[str] = ACTION_TYPES) -> str:
    """The one user message SOTOPIA's LLMAgent sends to ask ``seat`` for its action at ``turn``."""
    s = sotopia_api()
    fmt = s.PydanticOutputParser(pydantic_object=s.AgentAction).get_format_instructions()
    return _fill(sotopia_action_template(), {
        "agent": task.agent_names[seat], "turn_number": str(turn),
        "history": sotopia_history(task, seat, turns), "action_list": " ".join(action_types),
        "format_instructions": fmt})


def parse_sotopia_action(text: str) -> tuple[str, str] | None:
    """A reply read as SOTOPIA reads it (its PydanticOutputParser: fences stripped, JSON repaired,
    validated as an AgentAction); None when SOTOPIA could not parse it either."""
    s = sotopia_api()
    try:
        action = s.PydanticOutputParser(pydantic_object=s.AgentAction).parse(text)
    except Exception:  # noqa: BLE001 - any parse or validation failure means "not an action"
        return None
    return action.action_type, action.argument


def _sotopia_inbox(task: Task, turns: Sequence[Turn]) -> list[tuple[str, Any]]:
    """The env's inbox at the end of an episode: the environment's background, then per step
    ``Turn #k`` and every agent's action."""
    s = sotopia_api()
    inbox: list[tuple[str, Any]] = [("Environment", _sotopia_script_background(task, None))]
    for turn, actions in _sotopia_steps(task, turns):
        inbox.append(("Environment", s.SimpleMessage(message=f"Turn #{turn + 1}")))
        inbox += list(actions.items())
    return inbox


def sotopia_judge_history(task: Task, turns: Sequence[Turn]) -> str:
    """The ``history`` SOTOPIA's EpisodeLLMEvaluator renders from the inbox (``did nothing`` filtered)."""
    inbox = [(x, y) for x, y in _sotopia_inbox(task, turns) if "did nothing" not in y.to_natural_language()]
    return "\n".join(f"{x} {y.to_natural_language()}" if x != "Environment" else y.to_natural_language()
                     for x, y in inbox)


def sotopia_evaluation_model():
    """SOTOPIA's answer model: ``EvaluationForAgents[SotopiaDimensions]``."""
    s = sotopia_api()
    return s.EvaluationForAgents[s.SotopiaDimensions]


@functools.lru_cache(maxsize=4)
def sotopia_agent_instruction(num_agents: int) -> str:
    """The evaluator's ``agent_instruction`` for ``num_agents`` agents: the expression
    ``EpisodeLLMEvaluator.__acall__`` assigns, evaluated with SOTOPIA's own code."""
    import sotopia.envs.evaluators as evaluators

    fn = _function_node(evaluators, "EpisodeLLMEvaluator.__acall__")
    for node in ast.walk(fn):
        if (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
                and node.targets[0].id == "agent_instruction" and not isinstance(node.value, ast.Constant)):
            code = compile(ast.Expression(node.value), evaluators.__file__, "eval")
            return eval(code, {"num_agents": num_agents})  # noqa: S307 - SOTOPIA's installed code, not input
    raise ConfigError("cannot find the evaluator's agent instruction in the installed sotopia package; "
                      "prompt_style=sotopia is tested with sotopia==0.1.5")


def sotopia_evaluator_prompt(task: Task, turns: Sequence[Turn]) -> str:
    """The one user message SOTOPIA's EpisodeLLMEvaluator sends at the end of the episode."""
    s = sotopia_api()
    speakers = {x for x, _ in _sotopia_inbox(task, turns) if x != "Environment"}
    instruction = sotopia_agent_instruction(len(speakers)) if speakers else ""
    fmt = s.PydanticOutputParser(pydantic_object=sotopia_evaluation_model()).get_format_instructions()
    return _fill(sotopia_evaluator_template(), {"history": sotopia_judge_history(task, turns),
                                                "agent_instruction": instruction, "format_instructions": fmt})
