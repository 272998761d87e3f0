"""A programmatic judge whose goal score a test can check: ``RulesJudge`` scores an episode by a
fixed rule, for tasks built so that the rule *is* the social goal (``benchmarks/data/learning``:
"greet the other person by their first name ..."). It needs no model, so the whole SDPO loop
(negatives, error turn, segment, training, evaluation) can be measured on a CPU without the
noise of a model judge.

Model string: ``rules`` (the default rule) or ``rules:<rule>``, wherever a judge is chosen
(``sdpo.pairs models.judge=rules``, ``benchmarks.sotopia judge=rules``).

Rules (``RULES``):

* ``partner_name``: goal 10 if the agent addresses its partner by first name (the partner's
  ``first_name`` as a whole word, case-sensitive) in at least one of its turns, else 0.

Every rule also scores believability: 10 times the share of the agent's turns that read as
speech (a ``speak`` action of 3 words or more, no JSON braces, not a verbatim repeat of an
earlier turn of the episode), so that an agent that learns the rule by degenerating shows it.
The other five dimensions are not scored by the rules: 0, said so in the reasoning.

The judge's other two questions in the SDPO pipeline are answered by the same rule:
``error_turn`` is the agent's first turn that does not meet the rule, and ``segment`` ends at
the positive's first agent turn from the error turn on that meets it.
"""
from __future__ import annotations

import re
from collections.abc import Sequence

from sotopia_env.episode import EpisodeRecord, Turn
from sotopia_env.errors import ConfigError
from sotopia_env.evaluation import DIMENSIONS, AgentEvaluation, EpisodeEvaluation

RULES_PREFIX = "rules"
RULES: dict[str, str] = {
    "partner_name": "the agent addresses its partner by first name in at least one of its turns",
}
DEFAULT_RULE = "partner_name"
SCORED = ("goal", "believability")
"""The dimensions the rules score; the others are 0."""


def is_rules_judge(model_id: str) -> bool:
    """Whether a judge model string names the rules judge (``rules`` or ``rules:<rule>``)."""
    return model_id == RULES_PREFIX or str(model_id).startswith(RULES_PREFIX + ":")


def rule_of(model_id: str, option: str = "judge") -> str:
    """The rule a ``rules[:<rule>]`` string names; ConfigError naming ``option`` for an unknown rule."""
    rule = model_id.partition(":")[2] or DEFAULT_RULE
    if rule not in RULES:
        raise ConfigError(f"{option}={model_id}: unknown rule {rule!r}; allowed: "
                          + ", ".join(f"{RULES_PREFIX}:{r}" for r in RULES))
    return rule


def names_partner(turn: Turn, partner_first_name: str) -> bool:
    """Whether ``turn`` holds the partner's first name as a whole word."""
    return re.search(rf"(?<!\w){re.escape(partner_first_name)}(?!\w)", turn.argument) is not None


def reads_as_speech(turn: Turn, earlier: Sequence[Turn]) -> bool:
    """A ``speak`` turn of 3 words or more, without JSON braces, that repeats no earlier turn."""
    text = turn.argument.strip()
    return (turn.action_type == "speak" and len(text.split()) >= 3 and "{" not in text and "}" not in text
            and all(text != t.argument.strip() for t in earlier))


class RulesJudge:
    """An ``Evaluator`` that scores by a rule (see the module's text); also answers the SDPO
    pipeline's error-turn and segment questions by the same rule (``error_turn``, ``segment``)."""

    def __init__(self, model_id: str = RULES_PREFIX):
        self.rule = rule_of(model_id)
        self.name = f"{RULES_PREFIX}:{self.rule}"

    def __repr__(self) -> str:
        return f"RulesJudge(rule={self.rule!r})"

    def meets(self, record_or_task, turn: Turn) -> bool:
        """Whether one turn meets the rule (for its speaker, in this episode's task)."""
        task = getattr(record_or_task, "task", record_or_task)
        return names_partner(turn, task.profiles[1 - turn.agent_index].first_name)

    def evaluate(self, record: EpisodeRecord) -> EpisodeEvaluation:
        agents = []
        for seat in (0, 1):
            own = record.agent_turns(seat)
            hits = [i for i in own if self.meets(record, record.turns[i])]
            fluent = [i for i in own if reads_as_speech(record.turns[i], record.turns[:i])]
            scores = {d: 0.0 for d in DIMENSIONS}
            scores["goal"] = 10.0 if hits else 0.0
            scores["believability"] = 10.0 * len(fluent) / len(own) if own else 0.0
            partner = record.task.profiles[1 - seat].first_name
            reasoning = {d: "not scored by the rules" for d in DIMENSIONS}
            reasoning["goal"] = (f"rule {self.rule}: {partner!r} named in message(s) {hits}" if hits
                                 else f"rule {self.rule}: {partner!r} never named in {len(own)} turn(s)")
            reasoning["believability"] = f"{len(fluent)} of {len(own)} turn(s) read as speech"
            agents.append(AgentEvaluation(scores=scores, reasoning=reasoning))
        return EpisodeEvaluation(agents=agents, judge=self.name, comment=RULES[self.rule])

    async def aevaluate_with_usage(self, record: EpisodeRecord) -> tuple[EpisodeEvaluation, dict]:
        return self.evaluate(record), {"prompt_tokens": 0, "completion_tokens": 0, "cost": 0.0, "calls": 0}

    async def aevaluate(self, record: EpisodeRecord) -> EpisodeEvaluation:
        return (await self.aevaluate_with_usage(record))[0]

    # ------------------------------------------------------------ the pipeline's questions

    def error_turn(self, record: EpisodeRecord, agent_index: int) -> dict:
        """``{"index", "reason"}``: the agent's first turn that misses the rule (else its last turn)."""
        own = record.agent_turns(agent_index)
        misses = [i for i in own if not self.meets(record, record.turns[i])]
        index = misses[0] if misses else own[-1]
        return {"index": index, "reason": f"rule {self.rule}: the first of the agent's turns that misses it"
                if misses else f"rule {self.rule}: every turn meets it; the last turn"}

    def segment(self, negative: EpisodeRecord, positive_turns: Sequence[Turn], agent_index: int,
                error_turn: int) -> dict:
        """``{"start_index", "end_index", "reason"}``: from the error turn to the positive's first agent
        turn that meets the rule (else its first agent turn from the error turn). ``negative`` gives
        the task (the positive shares it)."""
        own = [i for i, t in enumerate(positive_turns) if i >= error_turn and t.agent_index == agent_index]
        if not own:
            raise ValueError(f"the positive has no turn of seat {agent_index} from message {error_turn}")
        hits = [i for i in own if self.meets(negative, positive_turns[i])]
        end = hits[0] if hits else own[0]
        return {"start_index": error_turn, "end_index": end,
                "reason": f"rule {self.rule}: up to the first turn that meets it" if hits
                else f"rule {self.rule}: no turn meets it; the error turn alone"}


def build_rules_judge(model_id: str, option: str = "judge") -> RulesJudge:
    """The rules judge of a ``rules[:<rule>]`` string (ConfigError naming ``option`` otherwise)."""
    rule_of(model_id, option)
    return RulesJudge(model_id)
