"""Error location (the SDPO pipeline, step 3): the judge names the trained agent's *error turn* in a
negative session.

The judge sees the session as numbered messages (the number is the index into the episode's
``turns``) and answers JSON ``{"index": int, "reason": str}`` (the authors' format). The answer
is validated: the index must be one of the trained agent's turns. An invalid answer is
re-asked (the judge is told what was wrong) at most ``max_reasks`` times; then the negative is
skipped and counted. Offline, ``LocalTurnScorer`` replaces the judge: it scores the answer
"The error turn is message N." for every agent turn N by the local model's log-probability and
takes the most likely.
"""
from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sotopia_env.episode import EpisodeRecord, Turn
from sotopia_env.errors import APIError, FatalAPIError
from sotopia_env.profiles import Task
from sotopia_env.render import action_json, background

from .stages import StageEntry, Status


class InvalidAnswer(ValueError):
    """The judge's answer broke the contract; the message is told to the judge when re-asking."""


# ---------------------------------------------------------------- what the judge reads

def numbered_messages(turns: Sequence[Turn], *, start: int = 0) -> str:
    """The turns as ``[i] Name: {"action_type": ..., "argument": ...}`` lines, i counting from ``start``."""
    return "\n".join(f"[{start + i}] {t.speaker}: {action_json(t.action_type, t.argument)}"
                     for i, t in enumerate(turns))


def task_brief(task: Task) -> str:
    """Scenario, participants, both backgrounds and both goals (the judge sees everything, as
    SOTOPIA's evaluator does)."""
    return background(task, None)


def locate_messages(record: EpisodeRecord, agent_index: int) -> list[dict]:
    """The chat messages asking the judge for the error turn of ``agent_index`` in ``record``."""
    name = record.task.agent_names[agent_index]
    own = record.agent_turns(agent_index)
    scores = ""
    if record.evaluated:
        scores = (f"\n{name}'s scores: goal {record.score(agent_index, 'goal'):g}/10, relationship "
                  f"{record.score(agent_index, 'relationship'):g} (-5..5).")
    prompt = (
        f"You review a social interaction between two people.\n\n{task_brief(record.task)}\n\n"
        f"The conversation, one numbered message per line:\n{numbered_messages(record.turns)}\n{scores}\n\n"
        f"Find {name}'s error turn: the one message of {name} that (1) matters most for reaching "
        f"{name}'s goal and (2) leaves room to do better on the goal or on the relationship. "
        f"It must be one of {name}'s messages, numbers {', '.join(map(str, own))}.\n"
        'Answer with a JSON object only: {"index": <message number>, "reason": "<one sentence>"}')
    return [{"role": "user", "content": prompt}]


# ---------------------------------------------------------------- validating the answer

_JSON_OBJECT = re.compile(r"\{.*\}", re.DOTALL)


def parse_json_object(text: str) -> dict:
    """The JSON object in a judge's answer (code fences and surrounding prose are tolerated)."""
    match = _JSON_OBJECT.search(text or "")
    if not match:
        raise InvalidAnswer("the answer holds no JSON object")
    try:
        obj = json.loads(match.group(0))
    except json.JSONDecodeError as e:
        raise InvalidAnswer(f"the answer is not valid JSON ({e.msg})") from None
    if not isinstance(obj, dict):
        raise InvalidAnswer("the answer must be a JSON object")
    return obj


def integer_field(obj: dict, name: str) -> int:
    value = obj.get(name)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidAnswer(f'"{name}" must be an integer message number, got {value!r}')
    return value


def validate_error_turn(text: str, record: EpisodeRecord, agent_index: int) -> dict:
    """Check a judge's error-location answer; return ``{"index", "reason"}`` or raise InvalidAnswer."""
    obj = parse_json_object(text)
    index = integer_field(obj, "index")
    own = record.agent_turns(agent_index)
    name = record.task.agent_names[agent_index]
    if not 0 <= index < len(record.turns):
        raise InvalidAnswer(f"index {index} is out of range: messages are numbered 0..{len(record.turns) - 1}")
    if index not in own:
        raise InvalidAnswer(f"message {index} is {record.turns[index].speaker}'s, not {name}'s; "
                            f"{name}'s messages are {', '.join(map(str, own))}")
    reason = obj.get("reason", "")
    return {"index": index, "reason": reason if isinstance(reason, str) else json.dumps(reason)}


# ---------------------------------------------------------------- asking with bounded re-asks

@dataclass
class Asked:
    """The outcome of a validated question: ``value`` (None when every answer was invalid), the
    raw answers, and the accounting of the calls made."""

    value: dict | None
    answers: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0

    def to_dict(self) -> dict:
        return {"answers": self.answers, "problems": self.problems, "calls": self.calls,
                "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "cost": self.cost}


async def ask_validated(client, messages: list[dict], validate: Callable[[str], dict], *, max_reasks: int,
                        max_tokens: int = 512, temperature: float = 0.0) -> Asked:
    """Ask ``client`` (an ``agents.llm_client.LLMClient``) and validate the answer; after an invalid
    answer, show the judge its answer and the problem and ask again, at most ``max_reasks`` times.
    APIError (the call failed for good) propagates: the caller records it as retryable."""
    asked = Asked(value=None)
    conversation = list(messages)
    for _ in range(max_reasks + 1):
        completion = await client.complete(conversation, temperature=temperature, max_tokens=max_tokens)
        asked.calls += 1
        asked.prompt_tokens += completion.prompt_tokens
        asked.completion_tokens += completion.completion_tokens
        asked.cost += completion.cost
        asked.answers.append(completion.text)
        try:
            asked.value = validate(completion.text)
            return asked
        except InvalidAnswer as problem:
            asked.problems.append(str(problem))
            conversation = conversation + [
                {"role": "assistant", "content": completion.text},
                {"role": "user", "content": f"Your answer is invalid: {problem}. Answer again with the JSON "
                                            "object only."}]
    return asked


# ---------------------------------------------------------------- the offline fallback

class LocalTurnScorer:
    """Scores a fixed set of answers to a question by a local causal LM's log-probabilities:
    ``score(messages, options)[k] = log p(options[k] | chat prompt of messages)`` (summed over
    the option's tokens). The offline stand-in for a judge's structured answer."""

    def __init__(self, model, tokenizer, *, max_prompt_tokens: int = 3072):
        self.model = model
        self.tokenizer = tokenizer
        self.max_prompt_tokens = max_prompt_tokens
        self.name = f"local-logprob:{Path(str(getattr(model.config, '_name_or_path', '') or 'model')).name}"

    def _prompt_ids(self, messages: list[dict]) -> list[int]:
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        # Keep the end (the question and the answer format) if the session is too long.
        return ids[-self.max_prompt_tokens:]

    def score(self, messages: list[dict], options: Sequence[str]) -> list[float]:
        import copy
        import inspect

        import torch

        prompt = self._prompt_ids(messages)
        device = next(self.model.parameters()).device
        # transformers 5 names the key/value cache argument "cache"; older versions "past_key_values".
        params = inspect.signature(self.model.forward).parameters
        cache_kw = "cache" if "cache" in params else "past_key_values"
        scores: list[float] = []
        with torch.no_grad():
            # The prompt is shared: run it once and reuse a copy of its cache for every option.
            out = self.model(torch.tensor([prompt], device=device), use_cache=True, logits_to_keep=1)
            first_logp = torch.log_softmax(out.logits[0, -1].float(), -1)
            cache = out["cache"] if "cache" in out else out["past_key_values"]
            for option in options:
                ids = self.tokenizer(option, add_special_tokens=False)["input_ids"]
                total = float(first_logp[ids[0]])
                if len(ids) > 1:
                    step = self.model(torch.tensor([ids[:-1]], device=device), use_cache=True,
                                      **{cache_kw: copy.deepcopy(cache)})
                    logp = torch.log_softmax(step.logits[0].float(), -1)
                    total += float(logp[torch.arange(len(ids) - 1), torch.tensor(ids[1:])].sum())
                scores.append(total)
        return scores


def most_likely(scorer: LocalTurnScorer, messages: list[dict], candidates: Sequence[int],
                answer: Callable[[int], dict]) -> tuple[int, dict]:
    """The offline answer to a judge question: the candidate ``c`` whose JSON answer ``answer(c)``
    the local model finds most likely. Returns ``(c, {"reason", "option_scores"})``."""
    scores = scorer.score(messages, [json.dumps(answer(c)) for c in candidates])
    best = max(range(len(candidates)), key=lambda k: scores[k])
    return candidates[best], {"reason": f"local fallback ({scorer.name}): most likely answer",
                              "option_scores": {str(c): round(x, 4) for c, x in zip(candidates, scores)}}


def local_error_turn(scorer: LocalTurnScorer, record: EpisodeRecord, agent_index: int) -> dict:
    """The offline error location: the agent turn whose "The error turn is message N." is most likely."""
    index, why = most_likely(scorer, locate_messages(record, agent_index), record.agent_turns(agent_index),
                             lambda i: {"index": i})
    return {"index": index, **why}


async def ask_judge_or_local(messages: list[dict], validate: Callable[[str], dict], local: Callable[[], dict], *,
                             client=None, scorer: LocalTurnScorer | None = None, max_reasks: int = 2,
                             max_tokens: int = 512) -> StageEntry:
    """One judge question as a stage entry (without its key): with a ``client``, ask it
    (``ask_validated``: ``messages``, ``validate``, bounded re-asks); without one, answer offline
    with ``local()`` (the ``scorer``'s most likely answer, or a rules judge's answer; ``scorer``
    names the answerer).

    Returns ``{"status": "ok", <answer>, "judge", <accounting>}``, ``{"status": "skipped",
    "reason": "invalid_answer", ...}`` after ``max_reasks`` invalid answers, or ``{"status":
    "error", ...}`` when the API failed for good (retried on the next run). FatalAPIError
    propagates: a refused key or unknown model fails every item alike, so the run stops."""
    if client is None:
        return {"status": Status.ok, **local(), "judge": scorer.name, "calls": 0, "local_calls": 1, "cost": 0.0}
    try:
        asked = await ask_validated(client, messages, validate, max_reasks=max_reasks, max_tokens=max_tokens)
    except FatalAPIError:
        raise
    except APIError as e:
        return {"status": Status.error, "reason": f"api_error: {e}", "judge": client.model, "calls": 0, "cost": 0.0}
    if asked.value is None:
        return {"status": Status.skipped, "reason": "invalid_answer", "judge": client.model, **asked.to_dict()}
    return {"status": Status.ok, **asked.value, "judge": client.model, **asked.to_dict()}


async def locate_one(record: EpisodeRecord, agent_index: int, *, client=None, scorer: LocalTurnScorer | None = None,
                     rules=None, max_reasks: int = 2, max_tokens: int = 512) -> StageEntry:
    """Locate the error turn of one negative; returns a stage entry (without its key):
    ``{"status": "ok", "index", "reason", ...}``, ``{"status": "skipped", "reason": ...}`` after
    ``max_reasks`` invalid answers, or ``{"status": "error", ...}`` when the API failed for good.
    ``rules`` (an ``agents.rules_judge.RulesJudge``) answers by its rule instead of a model."""
    if not record.agent_turns(agent_index):
        return {"status": Status.skipped, "reason": "the trained agent never acted", "calls": 0}
    local = (lambda: rules.error_turn(record, agent_index)) if rules is not None else \
        (lambda: local_error_turn(scorer, record, agent_index))
    return await ask_judge_or_local(locate_messages(record, agent_index),
                                    lambda text: validate_error_turn(text, record, agent_index), local,
                                    client=client, scorer=rules or scorer, max_reasks=max_reasks,
                                    max_tokens=max_tokens)
