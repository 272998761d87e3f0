"""
# SOTOPIA social task

| Import               | `import sotopia_env; env = sotopia_env.parallel_env(task)`            |
|----------------------|------------------------------------------------------------------------|
| Actions              | Discrete action type + free text argument                             |
| Parallel API         | Yes (`aec_env(...)` wraps it for the AEC API)                         |
| Manual control       | No                                                                     |
| Agents               | the two characters' full names, seat 0 first (`task.profiles[i].name`)|
| Number of agents     | 2                                                                      |
| Action space         | `Dict({"action_type": Discrete(5), "argument": Text(0, 20000)})`      |
| Observation space    | `Text(1, ...)` (any Unicode text)                                      |
| Turn orders          | `round-robin` (default), `simultaneous`, `random`                     |

Two characters pursue private social goals in a shared scenario (SOTOPIA's task: a scenario
plus two profiles, `sotopia_env.Task`). Each step is one *turn*; the agents whose turn it is
choose an action, the others can only do nothing.

### Actions

An action is a dict `{"action_type": int | str, "argument": str}`; `action_type` is an index
into, or an element of, `sotopia_env.ACTION_TYPES`:

| index | action type                | argument           | rendered in the conversation     |
|-------|----------------------------|--------------------|----------------------------------|
| 0     | `none`                     | ignored            | did nothing                      |
| 1     | `speak`                    | the words          | said: "..."                      |
| 2     | `non-verbal communication` | the gesture        | [non-verbal communication] ...   |
| 3     | `action`                   | the physical act   | [action] ...                     |
| 4     | `leave`                    | ignored            | left the conversation            |

An unknown action type raises `DataError` naming the allowed ones. An action from an agent
whose turn it is not is ignored (it may only do `none`) and `infos[agent]["ignored_action"]`
says so; a missing action of an agent whose turn it is counts as `none`.

### Turn orders

* `round-robin` (SOTOPIA's benchmark): seat 0 acts at even turns, seat 1 at odd turns.
* `simultaneous`: both act every turn (seat 0's action is recorded first).
* `random`: one seat per turn, drawn from the episode seed, so turn t has the same speaker
  whenever the seed is the same (also after a branch reset).

### Observations

Text, as that agent may see it, rendered by `sotopia_env.render` in the env's `prompt_style`:

* `native` (default): the scenario, both names in seat order, its own profile (secret
  included), the partner's profile as the relationship allows (never the secret), its own
  goal and `Unknown` for the partner's, the conversation so far (`Turn #t: <name> said:
  "..."`) and whose turn it is.
* `sotopia`: the history SOTOPIA 0.1.5's agent has received so far, byte for byte (needs
  the `sotopia` package: `pip install -e ".[sotopia]"`).

`infos[agent]` holds the structured state: `turn`, `agent_index`, `is_my_turn`,
`next_agents`, `available_actions`, `ignored_action`; at the end also `termination` and,
with an evaluator, `evaluation`.

### Ending and rewards

The episode ends after `max_turns` turns (20), when an agent leaves, or after more than
`max_stale_turns` (2) consecutive turns where everyone whose turn it was did nothing
(`sotopia_env.termination`). As in Gymnasium and PettingZoo, running out of turns is a time
limit: `truncations` is True and `terminations` False on that step; a leave or a stale
conversation is a termination. SOTOPIA's reason (`"max_turns"`, `"leave"`, `"stale"`) is in
`infos[agent]["termination"]` either way. Rewards are 0 until the end; at the
end the env calls `evaluator.evaluate(record)` (if an evaluator is set) and the reward is
`reward_weights` applied to each agent's scores (the goal score by default). A judge
failure gives a NaN reward, never a fake 0. Runners that judge asynchronously leave
`evaluator=None` and judge `env.to_record(...)` themselves.

### Arguments

``` python
sotopia_env.parallel_env(task=None, *, turn_order="round-robin", max_turns=20,
                         max_stale_turns=2, evaluator=None, reward_weights=None,
                         render_mode=None, prompt_style="native")
```

`task`: a `Task` or a built-in task id (`sotopia_env.get_task`); None: the first built-in
test task. `env.reset(task)` or `env.reset(seed=..., options={"task": ..., "history": ...,
"branch_turn": n})`: with an `EpisodeRecord` (or a list of `Turn`) as history and
`branch_turn=n`, the env starts in the exact state before `history.turns[n]` (same
history, turn counter and next speaker; the record's seed by default).

### Version history

* v1: the turn limit is reported as a truncation (was a termination); observations come
  from `sotopia_env.render` (SOTOPIA's profile fields only, participants in seat order, goal
  markup rendered); `prompt_style`.
* v0: initial release.
"""

from __future__ import annotations

import operator
import random
import string
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

from gymnasium import spaces
from pettingzoo import AECEnv, ParallelEnv

from .episode import ACTION_TYPES, EpisodeRecord, Turn
from .errors import ConfigError, DataError
from .evaluation import EpisodeEvaluation, Evaluator, RewardWeights
from .profiles import Task
from .render import check_prompt_style, observation, turn_line
from .termination import TIME_LIMIT, RuleBasedTermination

__all__ = ["TURN_ORDERS", "SotopiaEnv", "aec_env", "parallel_env"]

TURN_ORDERS: tuple[str, ...] = ("round-robin", "simultaneous", "random")
MAX_ARGUMENT_CHARS = 20_000
_OPTION_KEYS = ("task", "history", "branch_turn")

class _AnyText(spaces.Text):
    """A Text space over all of Unicode: ``contains`` accepts any string within the length
    bounds (scenarios and replies are not alphanumeric); ``sample`` draws printable ASCII."""

    def contains(self, x: Any) -> bool:
        return isinstance(x, str) and self.min_length <= len(x) <= self.max_length


# ---------------------------------------------------------------------------------------------
# The environment
# ---------------------------------------------------------------------------------------------


class SotopiaEnv(ParallelEnv):
    """Two characters talking in a SOTOPIA scenario; see the module docstring for the manual."""

    metadata: dict[str, Any] = {
        "name": "sotopia_v1", "render_modes": ["human", "ansi"], "is_parallelizable": True
    }
    # The task being played: set in __init__ and by reset(task) (both through _set_task), never None.
    task: Task

    def __init__(
        self,
        task: Task | str | None = None,
        *,
        turn_order: str = "round-robin",
        max_turns: int = 20,
        max_stale_turns: int = 2,
        evaluator: Evaluator | None = None,
        reward_weights: RewardWeights | Mapping[str, float] | None = None,
        render_mode: str | None = None,
        prompt_style: str = "native",
    ):
        turn_order = getattr(turn_order, "value", turn_order)  # accept an Enum from a hydra config
        if turn_order not in TURN_ORDERS:
            raise ConfigError(f"turn_order {turn_order!r} is not allowed; allowed: {', '.join(TURN_ORDERS)}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ConfigError(
                f"render_mode {render_mode!r} is not allowed; allowed: None, "
                f"{', '.join(self.metadata['render_modes'])}"
            )
        if evaluator is not None and not callable(getattr(evaluator, "evaluate", None)):
            raise ConfigError(
                f"evaluator must have an evaluate(record) method (sotopia_env.Evaluator), "
                f"got {type(evaluator).__name__}"
            )
        if reward_weights is None:
            reward_weights = RewardWeights()
        elif isinstance(reward_weights, Mapping):
            reward_weights = RewardWeights(dict(reward_weights))
        elif not isinstance(reward_weights, RewardWeights):
            raise ConfigError(
                f"reward_weights must be a RewardWeights or a dict dimension -> weight, "
                f"got {type(reward_weights).__name__}"
            )
        self.turn_order = turn_order
        self.prompt_style = check_prompt_style(prompt_style)
        self.termination_rules = RuleBasedTermination(max_turns, max_stale_turns)
        self.max_turns, self.max_stale_turns = max_turns, max_stale_turns
        self.evaluator = evaluator
        self.reward_weights = reward_weights
        self.render_mode = render_mode

        # One space object per kind, shared by both agents: PettingZoo requires the same object
        # on every call, and both characters act and observe alike.
        self._action_space = spaces.Dict(
            {
                "action_type": spaces.Discrete(len(ACTION_TYPES)),
                "argument": _AnyText(
                    MAX_ARGUMENT_CHARS, min_length=0, charset=string.ascii_letters + string.digits + " .,!?'"
                ),
            }
        )
        self._observation_space = _AnyText(100_000 + 2 * max_turns * (MAX_ARGUMENT_CHARS + 200), min_length=1)

        self.seed: int | None = None
        self._seed_rng: random.Random | None = None
        self.history: list[Turn] = []
        self.turn = 0
        self.termination: str | None = None
        self.evaluation: EpisodeEvaluation | None = None
        self.agents: list[str] = []
        self._lines: list[str] = []
        self._stale = 0
        self._parent_episode_id: str | None = None
        self._branch_turn: int | None = None
        self._set_task(self._resolve_task(task))

    # -- PettingZoo API ---------------------------------------------------------------------

    def reset(
        self, seed: int | Task | str | None = None, options: dict | None = None
    ) -> tuple[dict[str, str], dict[str, dict]]:
        """Start an episode; returns ``(observations, infos)``.

        ``env.reset(task)`` takes a Task or task id as first argument; the PettingZoo form is
        ``env.reset(seed=..., options={"task": ..., "history": ..., "branch_turn": n})``.
        ``history`` (an EpisodeRecord or a list of Turn) is replayed; with ``branch_turn=n``
        only its first n turns, so the env is in the exact state before ``turns[n]``.
        """
        task = None
        if isinstance(seed, (Task, str)):
            task, seed = seed, None
        options = dict(options or {})
        unknown = sorted(set(options) - set(_OPTION_KEYS))
        if unknown:
            warnings.warn(
                f"reset options {unknown} are not used; known options: {', '.join(_OPTION_KEYS)}",
                stacklevel=2,
            )
        task = options.get("task", task)
        history = options.get("history")
        branch_turn = options.get("branch_turn")
        self._parent_episode_id, self._branch_turn = None, None

        if isinstance(history, EpisodeRecord):
            recorded_order = history.tags.get("turn_order")
            if recorded_order is not None and recorded_order != self.turn_order:
                raise ConfigError(
                    f"episode {history.episode_id} was played in {recorded_order!r} turn order but "
                    f"this env uses {self.turn_order!r}; create the env with "
                    f"turn_order={recorded_order!r}"
                )
            for name in ("max_turns", "max_stale_turns"):
                recorded = history.tags.get(name)
                if recorded is not None and recorded != getattr(self, name):
                    warnings.warn(
                        f"episode {history.episode_id} was played with {name}={recorded} but this env uses "
                        f"{getattr(self, name)}; the continuation ends by this env's rules",
                        stacklevel=2,
                    )
            task = history.task if task is None else task
            seed = history.seed if seed is None else seed
            if branch_turn is not None:
                self._parent_episode_id = history.episode_id
            turns = list(history.turns)
        elif history is None:
            if branch_turn is not None:
                raise ConfigError(
                    "reset option 'branch_turn' needs a 'history' (an EpisodeRecord or a list of Turn)"
                )
            turns = []
        elif isinstance(history, (list, tuple)):
            turns = [t if isinstance(t, Turn) else Turn.from_dict(t) for t in history]
        else:
            raise ConfigError(
                f"reset option 'history' must be an EpisodeRecord or a list of Turn, "
                f"got {type(history).__name__}"
            )
        if branch_turn is not None:
            if (
                isinstance(branch_turn, bool)
                or not isinstance(branch_turn, int)
                or not 0 <= branch_turn <= len(turns)
            ):
                raise ConfigError(
                    f"branch_turn must be an integer in [0, {len(turns)}] (the history has "
                    f"{len(turns)} turns), got {branch_turn!r}"
                )
            if (
                self.turn_order == "simultaneous"
                and 0 < branch_turn < len(turns)
                and turns[branch_turn].turn == turns[branch_turn - 1].turn
            ):
                raise ConfigError(
                    f"branch_turn {branch_turn} is the second action of simultaneous turn "
                    f"{turns[branch_turn].turn}; branch at {branch_turn - 1}, where that turn starts"
                )
            self._branch_turn = branch_turn
            turns = turns[:branch_turn]

        if task is not None:
            resolved = self._resolve_task(task)
            self._check_history_task(resolved, history, turns)
            self._set_task(resolved)
        else:
            self._check_history_task(self.task, history, turns)
        self._start_seed(seed)
        self.history = []
        self._lines = []
        self.turn = 0
        self._stale = 0
        self.termination = None
        self.evaluation = None
        self.agents = list(self.possible_agents)
        self._replay(turns)
        observations = self._observations()
        return observations, self._infos([False, False])

    def step(
        self, actions: Mapping[str, Mapping[str, Any]]
    ) -> tuple[dict[str, str], dict[str, float], dict[str, bool], dict[str, bool], dict[str, dict]]:
        """Play one turn. ``actions`` maps agent names to ``{"action_type", "argument"}``; returns
        ``(observations, rewards, terminations, truncations, infos)`` for the agents that were live."""
        if not self.agents:
            raise ConfigError(f"the episode is over ({self.termination}); call reset() to start another")
        if not isinstance(actions, Mapping):
            raise DataError(f"actions must be a dict agent name -> action, got {type(actions).__name__}")
        submitted: dict[int, tuple[str, str]] = {}
        for agent, action in actions.items():
            seat = self._seat.get(agent)
            if seat is None:
                raise DataError(
                    f"unknown agent {agent!r}; agents: {', '.join(self.possible_agents)}", field="actions"
                )
            submitted[seat] = self._parse_action(agent, action)
        speakers = self._speakers(self.turn)
        taken = [
            Turn(self.turn, seat, self._names[seat], *submitted.get(seat, ("none", ""))) for seat in speakers
        ]
        ignored = [seat not in speakers and submitted.get(seat, ("none",))[0] != "none" for seat in (0, 1)]
        self._advance(taken)

        live = self.agents
        observations = self._observations()
        infos = self._infos(ignored)
        rewards = dict.fromkeys(live, 0.0)
        if self.termination is not None:
            if self.evaluator is not None:
                rewards = self._evaluate(self.evaluator, infos)
            for agent in live:
                infos[agent]["termination"] = self.termination
            self.agents = []
        if self.render_mode == "human":
            self.render()
        # Gymnasium's and PettingZoo's convention: running out of turns is a time limit
        # (truncation); a leave or a stale conversation ends the episode itself (termination).
        timed_out = self.termination == TIME_LIMIT
        return (
            observations,
            rewards,
            dict.fromkeys(live, self.termination is not None and not timed_out),
            dict.fromkeys(live, timed_out),
            infos,
        )

    def observation_space(self, agent: str) -> spaces.Space:
        return self._observation_space

    def action_space(self, agent: str) -> spaces.Space:
        return self._action_space

    def render(self) -> str | None:
        """``ansi``: the conversation so far as text; ``human``: print it."""
        text = "\n".join(self._lines)
        if self.render_mode == "human":
            print(text)
            return None
        return text

    def close(self) -> None:
        pass

    # -- Our additions ------------------------------------------------------------------------

    def next_agents(self) -> list[str]:
        """Names of the agents whose turn it is (empty once the episode is over)."""
        if self.termination is not None:
            return []
        return [self._names[s] for s in self._speakers(self.turn)]

    def to_record(
        self,
        models: Sequence[str] = ("", ""),
        sampling: Sequence[dict] = ({}, {}),
        seed: int | None = None,
        tags: Mapping[str, Any] | None = None,
        **fields: Any,
    ) -> EpisodeRecord:
        """The episode so far as an ``EpisodeRecord``: task, turns (the shared history of a
        branch included), termination, evaluation, seed, and the env settings in ``tags``.
        ``fields`` go to EpisodeRecord (e.g. ``usage``, ``timings``, ``episode_id``)."""
        all_tags = {
            "turn_order": self.turn_order,
            "max_turns": self.max_turns,
            "max_stale_turns": self.max_stale_turns,
            **(tags or {}),
        }
        return EpisodeRecord(
            task=self.task,
            turns=list(self.history),
            models=list(models),
            sampling=[dict(s) for s in sampling],
            evaluation=self.evaluation,
            seed=self.seed if seed is None else seed,
            parent_episode_id=self._parent_episode_id,
            branch_turn=self._branch_turn,
            termination=self.termination or "",
            tags=all_tags,
            **fields,
        )

    # -- Internals ----------------------------------------------------------------------------

    @staticmethod
    def _resolve_task(task: Task | str | None) -> Task:
        if isinstance(task, Task):
            return task
        from .builtin import builtin_tasks, get_task  # the built-in data is only read when needed

        if isinstance(task, str):
            return get_task(task)
        if task is None:
            tasks = builtin_tasks("test")
            if not tasks:
                raise ConfigError("no task given and the built-in test split is empty; pass a Task")
            return tasks[0]
        raise ConfigError(f"task must be a Task or a task id (str), got {type(task).__name__}")

    def _set_task(self, task: Task) -> None:
        names = task.agent_names
        if names[0] == names[1]:
            raise DataError(
                f"task {task.pk!r}: both seats are played by {names[0]!r}; the two characters "
                f"need different names (they are the agent ids)",
                field="agent_ids",
            )
        self.task = task
        self._names = names
        self._seat = {name: i for i, name in enumerate(names)}
        self.possible_agents = list(names)
        self.observation_spaces = dict.fromkeys(names, self._observation_space)
        self.action_spaces = dict.fromkeys(names, self._action_space)

    @staticmethod
    def _check_history_task(task: Task, history: Any, turns: list[Turn]) -> None:
        """A history belongs to the task it is replayed on: a record of another task (or turns whose
        speakers are not this task's characters) would put one task's lines in another's mouths."""
        if isinstance(history, EpisodeRecord) and history.task.pk != task.pk:
            raise ConfigError(
                f"the history is episode {history.episode_id} of task {history.task.pk!r} "
                f"({' and '.join(history.task.agent_names)}), not of task {task.pk!r} "
                f"({' and '.join(task.agent_names)}); reset with its own task"
            )
        names = task.agent_names
        for i, t in enumerate(turns):
            if t.speaker and t.speaker != names[t.agent_index]:
                raise ConfigError(
                    f"history turn index {i} was spoken by {t.speaker!r} in seat {t.agent_index}, but seat "
                    f"{t.agent_index} of task {task.pk!r} is {names[t.agent_index]!r}; the history belongs "
                    f"to another task"
                )

    def _start_seed(self, seed: int | None) -> None:
        if seed is not None:
            if isinstance(seed, bool) or not isinstance(seed, int):
                raise ConfigError(f"seed must be an int or None, got {type(seed).__name__}")
            self._seed_rng = random.Random(seed)
            self.seed = seed
        else:
            # No seed: continue the stream of the last explicit seed (PettingZoo's convention),
            # or draw a fresh one; either way the episode's seed is known and recorded.
            self.seed = (self._seed_rng or random.SystemRandom()).randrange(2**31)
        if self.turn_order == "random":
            rng = random.Random(self.seed)
            self._random_seats = [rng.randrange(2) for _ in range(self.max_turns)]

    def _speakers(self, turn: int) -> tuple[int, ...]:
        if self.turn_order == "round-robin":
            return (turn % 2,)
        if self.turn_order == "simultaneous":
            return (0, 1)
        return (self._random_seats[turn],)

    def _parse_action(self, agent: str, action: Any) -> tuple[str, str]:
        if not isinstance(action, Mapping) or "action_type" not in action:
            raise DataError(
                f"action of {agent!r} must be a dict with 'action_type' and 'argument', got {action!r:.80}",
                field="action",
            )
        action_type = action["action_type"]
        if isinstance(action_type, str):
            if action_type not in ACTION_TYPES:
                raise DataError(
                    f"action type {action_type!r} of {agent!r} is not allowed; allowed: "
                    f"{', '.join(ACTION_TYPES)} (or their indices 0-{len(ACTION_TYPES) - 1})",
                    field="action_type",
                )
        else:
            try:
                index = operator.index(action_type)  # ints, numpy integers from action_space.sample()
            except TypeError:
                index = -1
            if not 0 <= index < len(ACTION_TYPES):
                raise DataError(
                    f"action type {action_type!r} of {agent!r} is not allowed; allowed: indices "
                    f"0-{len(ACTION_TYPES) - 1} or the names {', '.join(ACTION_TYPES)}",
                    field="action_type",
                )
            action_type = ACTION_TYPES[index]
        argument = action.get("argument", "")
        if not isinstance(argument, str):  # one rule on every path (Turn.from_dict too): a string
            raise DataError(
                f"argument of {agent!r} must be a str, got {type(argument).__name__}", field="argument"
            )
        if len(argument) > MAX_ARGUMENT_CHARS:
            raise DataError(
                f"argument of {agent!r} has {len(argument)} characters; at most {MAX_ARGUMENT_CHARS}",
                field="argument",
            )
        return action_type, str(argument)

    def _advance(self, taken: list[Turn]) -> None:
        """Apply the actions of one turn (those of the agents whose turn it was)."""
        for t in taken:
            self.history.append(t)
            self._lines.append(turn_line(t, self._names[t.agent_index]))
        left = False
        stale = True
        for t in taken:
            if t.action_type == "leave":
                left = True
            if t.action_type != "none":
                stale = False
        self._stale = self._stale + 1 if stale else 0
        self.turn += 1
        self.termination = self.termination_rules.reason(self.turn, self._stale, left)

    def _replay(self, turns: list[Turn]) -> None:
        """Rebuild the state after ``turns`` by applying them turn by turn, checking that each was
        taken by the seat(s) whose turn it was under this turn order and seed."""
        i = 0
        while i < len(turns):
            if self.termination is not None:
                raise ConfigError(
                    f"the history ends the episode ({self.termination}) before its turn index {i}; "
                    f"branch at or before {i - 1}"
                )
            speakers = self._speakers(self.turn)
            group = turns[i : i + len(speakers)]
            seats = tuple(t.agent_index for t in group)
            if seats != speakers or any(t.turn != self.turn for t in group):
                got = ", ".join(f"seat {t.agent_index} at turn {t.turn}" for t in group)
                raise DataError(
                    f"history turn index {i}: under {self.turn_order!r} order (seed {self.seed}) turn "
                    f"{self.turn} is played by seat(s) {list(speakers)}, but the history has {got}",
                    field="history",
                )
            self._advance(
                [
                    Turn(
                        t.turn,
                        t.agent_index,
                        self._names[t.agent_index],
                        t.action_type,
                        t.argument,
                        t.prompt_tokens,
                        t.completion_tokens,
                        t.fallback,
                    )
                    for t in group
                ]
            )
            i += len(speakers)
        if self.termination is not None:
            raise ConfigError(
                f"the history already ended the episode ({self.termination}) after {len(turns)} "
                f"turns; branch at an earlier turn"
            )

    def _observations(self) -> dict[str, str]:
        speakers = () if self.termination is not None else self._speakers(self.turn)
        return {name: observation(self.task, seat, self.history, self.turn, speakers=speakers,
                                  termination=self.termination, style=self.prompt_style)
                for seat, name in enumerate(self._names)}

    def _infos(self, ignored: list[bool]) -> dict[str, dict]:
        done = self.termination is not None
        speakers = () if done else self._speakers(self.turn)
        next_agents = [self._names[s] for s in speakers]
        return {
            name: {
                "turn": self.turn,
                "agent_index": seat,
                "is_my_turn": seat in speakers,
                "next_agents": list(next_agents),
                "available_actions": list(ACTION_TYPES) if seat in speakers else ([] if done else ["none"]),
                "ignored_action": ignored[seat],
            }
            for seat, name in enumerate(self._names)
        }

    def _evaluate(self, evaluator: Evaluator, infos: dict[str, dict]) -> dict[str, float]:
        evaluation = evaluator.evaluate(self.to_record())
        if not isinstance(evaluation, EpisodeEvaluation):
            raise DataError(
                f"evaluator {getattr(evaluator, 'name', type(evaluator).__name__)!r} returned "
                f"{type(evaluation).__name__}, expected an EpisodeEvaluation"
            )
        self.evaluation = evaluation
        rewards = {}
        for seat, name in enumerate(self._names):
            infos[name]["evaluation"] = evaluation.to_dict()
            # A failed judge is NaN, never a score of 0 that would look like a real one.
            rewards[name] = (
                self.reward_weights.reward(evaluation.agents[seat])
                if evaluation.evaluated and evaluation.agents is not None
                else float("nan")
            )
        return rewards


def parallel_env(task: Task | str | None = None, **config: Any) -> SotopiaEnv:
    """The SOTOPIA environment, PettingZoo's parallel API (see the module docstring)."""
    return SotopiaEnv(task, **config)


def aec_env(task: Task | str | None = None, **config: Any) -> AECEnv:
    """The same environment behind PettingZoo's AEC (agent-by-agent) API."""
    from pettingzoo.utils.conversions import parallel_to_aec

    return parallel_to_aec(SotopiaEnv(task, **config))
