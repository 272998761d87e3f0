"""Dry runs: the model calls, tokens and price a run would make, counted without calling any model.

``python -m benchmarks.sotopia dry_run=true ...`` and ``python -m sdpo.pairs dry_run=true ...``
fill a ``CallPlan`` from the run's own plan (the same tasks, seats, run keys and stores as the
real run) and print it as a Markdown table. How each figure is made:

* **calls**: one per turn of every episode still to play (a turn limit of ``max_turns`` turns,
  one speaker a turn), one judge call per episode to judge, one per error turn or segment to
  ask. Work already in the run's stores is not counted (a resumed run repeats no call; a stored
  episode whose judge failed costs its judge call only). Episodes that end early (a ``leave``,
  a stale conversation) make fewer turn calls, so turn-dependent counts are upper bounds;
  ``at most`` adds every judge re-ask allowed after invalid answers.
* **prompt tokens**: every prompt is rendered by the code the run sends it with (the agent's
  messages, the judge's rubric, the error-turn and segment questions) over a conversation whose
  every action is as long as the assumed reply, and counted with the API policies' estimate
  (about 3 characters a token, which errs long).
* **completion tokens**: each answer at an assumed length (``ASSUMED_REPLY_TOKENS``...), never
  above its call's ``max_tokens``. ``completion cap`` is calls x max_tokens: the most any run can
  be billed for completions.
* **price**: LiteLLM's local cost map (``litellm.cost_per_token``); local models (embedded,
  ``hf:<id>``, a folder) cost 0; an API model the map does not price is shown as unpriced.
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from sotopia_env.episode import EpisodeRecord, Turn
from sotopia_env.profiles import Task
from sotopia_env.redaction import redact
from sotopia_env.render import action_json

from .formatter import ConversationFormat, agent_messages
from .models import is_local_model

ASSUMED_REPLY_TOKENS = 128
"""Assumed length of one agent or partner turn (capped by the call's max_tokens): an assumption of
the estimate, not a measurement."""
ASSUMED_EVALUATION_TOKENS = 900
"""Assumed length of the judge's evaluation (a reasoning and a score for 7 dimensions x 2 agents)."""
ASSUMED_JUDGE_ANSWER_TOKENS = 60
"""Assumed length of an error-turn or segment answer (``{"index": n, "reason": "<one sentence>"}``)."""


def approx_tokens(messages: Sequence[dict]) -> int:
    """The prompt length estimate of API policies (about 3 characters a token, errs long)."""
    from .litellm_policy import _approx_tokens

    return _approx_tokens(list(messages))


def filler_turn(task: Task, turn: int, seat: int, tokens: int) -> Turn:
    """A stand-in action of ``tokens`` estimated tokens, for rendering prompts of turns not yet played."""
    size = max(0, 3 * tokens - len(action_json("speak", "")))
    return Turn(turn, seat, task.agent_names[seat], "speak", ("word " * (size // 5 + 1))[:size])


def price(model: str, prompt_tokens: int, completion_tokens: int) -> float | None:
    """US dollars by LiteLLM's local cost map; 0 for a local model, None for an API model it does not price."""
    if is_local_model(model):
        return 0.0
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    try:
        prompt_cost, completion_cost = litellm.cost_per_token(model=model, prompt_tokens=prompt_tokens,
                                                              completion_tokens=completion_tokens)
    except Exception:  # noqa: BLE001 - LiteLLM raises assorted types for models it does not price
        return None
    return float(prompt_cost) + float(completion_cost)


@dataclass(frozen=True)
class Seat:
    """Who plays a seat in a planned episode: the role shown in the table, the model, its reply cap."""

    role: str
    model: str
    max_tokens: int


@dataclass(frozen=True)
class Judge:
    """The episode judge of a plan: model (a local judge: "local" or a local model id), answer cap, re-asks."""

    model: str
    max_tokens: int = 2048
    max_reasks: int = 0


@dataclass
class CallRow:
    """The calls of one role and model in one stage."""

    stage: str
    role: str
    model: str
    calls: int = 0
    max_calls: int = 0
    """With every judge re-ask allowed after an invalid answer."""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    completion_cap: int = 0

    @property
    def price(self) -> float | None:
        return price(self.model, self.prompt_tokens, self.completion_tokens)

    @property
    def price_at_caps(self) -> float | None:
        return price(self.model, self.prompt_tokens, self.completion_cap)


@dataclass
class CallPlan:
    """The model calls a run would make, by stage, role and model, and the episodes behind them."""

    rows: dict[tuple[str, str, str], CallRow] = field(default_factory=dict)
    episodes: dict[str, dict[str, int]] = field(default_factory=dict)
    """Per stage: ``to_play``, ``to_rejudge`` (stored, judge failed) and ``stored`` (done, not counted)."""
    notes: list[str] = field(default_factory=list)
    _cache: dict = field(default_factory=dict, repr=False)

    def add(self, stage: str, role: str, model: str, *, prompt_tokens: int, completion_tokens: int, max_tokens: int,
            reasks: int = 0) -> None:
        """One call (plus up to ``reasks`` re-asks, counted in ``max_calls`` only)."""
        row = self.rows.setdefault((stage, role, model), CallRow(stage, role, model))
        row.calls += 1
        row.max_calls += 1 + reasks
        row.prompt_tokens += prompt_tokens
        row.completion_tokens += min(completion_tokens, max_tokens)
        row.completion_cap += max_tokens

    def count_episodes(self, stage: str, *, to_play: int = 0, to_rejudge: int = 0, stored: int = 0) -> None:
        counts = self.episodes.setdefault(stage, {"to_play": 0, "to_rejudge": 0, "stored": 0})
        counts["to_play"] += to_play
        counts["to_rejudge"] += to_rejudge
        counts["stored"] += stored

    # ---------------------------------------------------------------- episodes

    def add_episode(self, stage: str, task: Task, seats: Sequence[Seat], judge: Judge | None, *, max_turns: int,
                    history: Sequence[Turn] = (), prompt_style: str = "native") -> list[Turn]:
        """Plan one episode from ``history`` to ``max_turns`` turns (round-robin: seat ``turn % 2``
        speaks), then its judge call; returns the planned turns (history included)."""
        fmt = ConversationFormat(max_turns=max_turns, prompt_style=prompt_style)
        start = len({t.turn for t in history})
        key = (task.pk, tuple(seats), max_turns, start, prompt_style) if not history else None
        if key is not None and key in self._cache:
            turns, prompts = self._cache[key]
        else:
            turns, prompts = list(history), []
            for turn in range(start, max_turns):
                seat = turn % 2
                prompts.append(approx_tokens(agent_messages(task, seat, turns, fmt=fmt)))
                turns.append(filler_turn(task, turn, seat, min(seats[seat].max_tokens, ASSUMED_REPLY_TOKENS)))
            if key is not None:
                self._cache[key] = (turns, prompts)
        for turn, prompt in zip(range(start, max_turns), prompts):
            s = seats[turn % 2]
            self.add(stage, s.role, s.model, prompt_tokens=prompt, completion_tokens=ASSUMED_REPLY_TOKENS,
                     max_tokens=s.max_tokens)
        self.count_episodes(stage, to_play=1)
        if judge is not None:
            self.add_judging(stage, EpisodeRecord(task=task, turns=list(turns)), judge, prompt_style=prompt_style)
        return list(turns)

    def add_judging(self, stage: str, record: EpisodeRecord, judge: Judge, *, prompt_style: str = "native") -> None:
        """The judge's call on one episode."""
        from .judge import judge_messages

        self.add(stage, "judge: episode", judge.model, prompt_tokens=approx_tokens(judge_messages(record, prompt_style)),
                 completion_tokens=ASSUMED_EVALUATION_TOKENS, max_tokens=judge.max_tokens, reasks=judge.max_reasks)

    # ---------------------------------------------------------------- output

    def ordered_rows(self) -> list[CallRow]:
        """Rows by stage (in the order the stages run), then agent, positive, partner, judges."""
        stages = list(dict.fromkeys(stage for stage, _, _ in self.rows))
        roles = ("agent", "positive", "partner")
        return sorted(self.rows.values(), key=lambda r: (stages.index(r.stage),
                                                        roles.index(r.role) if r.role in roles else len(roles),
                                                        r.role, r.model))

    def totals(self) -> CallRow:
        total = CallRow("all", "", "")
        for row in self.rows.values():
            for name in ("calls", "max_calls", "prompt_tokens", "completion_tokens", "completion_cap"):
                setattr(total, name, getattr(total, name) + getattr(row, name))
        return total

    def total_price(self, attr: str = "price") -> tuple[float, list[str]]:
        """Sum of the priced rows, and the API models the cost map does not price."""
        value, unpriced = 0.0, []
        for row in self.rows.values():
            p = getattr(row, attr)
            if p is None:
                unpriced.append(row.model)
            else:
                value += p
        return value, sorted(set(unpriced))

    def to_dict(self) -> dict:
        rows = []
        for row in self.ordered_rows():
            rows.append({**asdict(row), "price": row.price, "price_at_caps": row.price_at_caps})
        total, unpriced = self.total_price()
        at_caps, _ = self.total_price("price_at_caps")
        return {"rows": rows, "episodes": self.episodes, "totals": {**asdict(self.totals()), "price": total,
                                                                      "price_at_caps": at_caps, "unpriced": unpriced},
                "assumptions": {"reply_tokens": ASSUMED_REPLY_TOKENS, "evaluation_tokens": ASSUMED_EVALUATION_TOKENS,
                                "judge_answer_tokens": ASSUMED_JUDGE_ANSWER_TOKENS,
                                "prompt_tokens": "rendered prompts, about 3 characters a token"},
                "notes": self.notes}

    def table(self) -> str:
        """The plan as Markdown: the episodes per stage, then one row per stage, role and model."""
        def dollars(value: float | None) -> str:
            return "unpriced" if value is None else f"{value:.2f}"

        lines = ["| stage | episodes to play | to re-judge | already stored |", "|---|---:|---:|---:|"]
        for stage, c in self.episodes.items():
            lines.append(f"| {stage} | {c['to_play']} | {c['to_rejudge']} | {c['stored']} |")
        lines += ["", "| stage | role | model | calls | at most | prompt tokens | completion tokens | completion cap "
                  "| price $ | at caps $ |", "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
        for r in self.ordered_rows():
            lines.append(f"| {r.stage} | {r.role} | {r.model} | {r.calls} | {r.max_calls} | {r.prompt_tokens} | "
                         f"{r.completion_tokens} | {r.completion_cap} | {dollars(r.price)} | "
                         f"{dollars(r.price_at_caps)} |")
        t = self.totals()
        total, unpriced = self.total_price()
        at_caps, _ = self.total_price("price_at_caps")
        lines.append(f"| **total** | | | {t.calls} | {t.max_calls} | {t.prompt_tokens} | {t.completion_tokens} | "
                     f"{t.completion_cap} | {total:.2f} | {at_caps:.2f} |")
        lines += ["", f"Dry run: no model was called. Prompt tokens: every prompt rendered as the run sends it, "
                      f"about 3 characters a token, with every action {ASSUMED_REPLY_TOKENS} tokens long (or its "
                      f"cap); completions assumed {ASSUMED_REPLY_TOKENS} tokens a turn, {ASSUMED_EVALUATION_TOKENS} "
                      f"an evaluation, {ASSUMED_JUDGE_ANSWER_TOKENS} an error-turn or segment answer, each at most "
                      "its cap. Prices: LiteLLM's cost map; local models cost 0. Turn counts assume no episode "
                      "ends before max_turns (upper bounds); 'at most' adds every judge re-ask; 'at caps' prices every "
                      "completion at its max_tokens."]
        if unpriced:
            lines.append(f"Not in LiteLLM's cost map (left out of the totals): {', '.join(unpriced)}.")
        lines += self.notes
        return "\n".join(lines)

    def write_json(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(redact(json.dumps(self.to_dict(), indent=2)) + "\n", encoding="utf-8")
        return path
