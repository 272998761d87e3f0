"""Judges of finished episodes on SOTOPIA's seven dimensions, for both agents.

* ``LLMJudge``: an API model (GPT-4o in the paper) asked at temperature 0. With
  ``prompt_style="sotopia"`` the request is SOTOPIA 0.1.5's evaluator prompt byte for byte
  (its rubric, the field descriptions of ``SotopiaDimensions``, read from the installed
  package) and the answer is read as SOTOPIA reads it (``{"evaluations": {"agent_1": {dim:
  [reasoning, score]}}}``); with ``native`` our own wording asks for JSON in SOTOPIA v0.1.4's
  answer shape. Either way the answer is validated (every dimension of both agents present,
  an integer, in range) and re-asked with the problem a bounded number of times; then the
  episode is marked unevaluated (``EpisodeEvaluation.failed``), never scored 0.
* ``LocalJudge``: offline, on the embedded model. A small model writes poor JSON, so for every
  agent and dimension it reads the model's probabilities of each allowed integer answer and
  takes the expected score. All 14 questions share one forward pass of the episode text.

Reusable pieces for other judges (``sdpo.pairs``): ``ask_json`` (ask, validate, re-ask) and
``score_candidates`` (log-probability of each candidate answer under a local model).
"""
from __future__ import annotations

import asyncio
import json
import math
import re
from collections.abc import Callable, Sequence

from sotopia_env import render
from sotopia_env.episode import EpisodeRecord
from sotopia_env.errors import APIError, DataError, FatalAPIError
from sotopia_env.evaluation import DIMENSION_RANGES, DIMENSIONS, AgentEvaluation, EpisodeEvaluation

from .hf_compat import takes_boolean_mask

# What each dimension asks in the native style: SOTOPIA's evaluator content in our words
# (prompt_style="sotopia" sends SOTOPIA's own rubric instead).
DIMENSION_QUESTIONS: dict[str, str] = {
    "believability": (
        "Does the agent interact in a natural, realistic way (not robotic, not repeating itself), and is its "
        "behaviour consistent with its character profile? Higher is more believable."),
    "relationship": (
        "Compare the relationship between the two characters before and after the interaction: did the agent's "
        "behaviour help preserve or improve it (friendship, trust, family ties, social standing)? Positive scores "
        "mean it improved, negative that it was harmed, 0 no change."),
    "knowledge": (
        "Did the agent gain new and important information during the interaction (about the other person, the "
        "situation or the world)? Higher means more valuable knowledge gained."),
    "secret": (
        "Did the agent reveal its secret or a hidden intention it wanted to keep? 0 means nothing was revealed; "
        "-10 means critical secrets were disclosed."),
    "social_rules": (
        "Did the agent break moral rules or laws (lying, threatening, deceiving, breaking the law)? 0 means no "
        "violation; -10 means severe violations."),
    "financial_and_material_benefits": (
        "Did the agent gain or lose money, goods, or other material or financial benefits in the interaction? "
        "Positive is a gain, negative a loss, 0 no change."),
    "goal": (
        "First restate the agent's social goal, then judge how much of it the agent achieved by the end of the "
        "interaction. 0 means no progress, 10 means the goal was fully reached."),
}

SOTOPIA_AGENT_KEYS = ("agent_1_evaluation", "agent_2_evaluation")


# ------------------------------------------------------------------------- the judge's prompt

def judge_messages(record: EpisodeRecord, prompt_style: str = "native") -> list[dict]:
    """The LLM judge's request. ``sotopia``: SOTOPIA's evaluator message. ``native``: the episode,
    the seven dimensions with their ranges, and the JSON answer shape (reasoning, then an
    integer score, per dimension and agent)."""
    if prompt_style == "sotopia":
        return [{"role": "user", "content": render.sotopia_evaluator_prompt(record.task, record.turns)}]
    names = record.task.agent_names
    dims = "\n".join(f"- {d} (integer from {DIMENSION_RANGES[d][0]} to {DIMENSION_RANGES[d][1]}): "
                     f"{DIMENSION_QUESTIONS[d]}" for d in DIMENSIONS)
    example = {k: {d: ["<reasoning>", 0] for d in DIMENSIONS[:2]} for k in SOTOPIA_AGENT_KEYS}
    instructions = (
        f"{render.episode_text(record.task, record.turns)}\n\n"
        f"Evaluate both agents: agent 1 is {names[0]}, agent 2 is {names[1]}. For each agent and each of the "
        f"seven dimensions below, first write your reasoning, then give an integer score in the stated range.\n"
        f"{dims}\n\n"
        f"Answer with one JSON object and nothing else, of the form "
        f"{json.dumps(example)} but with all seven dimensions for both agents: "
        f'"agent_1_evaluation" and "agent_2_evaluation" each map every dimension name to '
        f'["reasoning", integer score].')
    return [{"role": "system", "content": "You are an impartial evaluator of social interactions between two "
                                          "characters. You follow the answer format exactly."},
            {"role": "user", "content": instructions}]


# ------------------------------------------------------------------------- validation

_FENCE = re.compile(r"^```(?:json)?\s*|\s*```$", re.MULTILINE)


def extract_json(text: str) -> dict:
    """The JSON object in a model's answer (code fences and text around it tolerated); DataError otherwise."""
    stripped = _FENCE.sub("", text.strip())
    start, end = stripped.find("{"), stripped.rfind("}")
    if start < 0 or end <= start:
        raise DataError("the answer holds no JSON object")
    try:
        obj = json.loads(stripped[start:end + 1])
    except json.JSONDecodeError as e:
        raise DataError(f"the answer is not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
    if not isinstance(obj, dict):
        raise DataError(f"expected a JSON object, got {type(obj).__name__}")
    return obj


def parse_evaluation(obj: dict) -> list[AgentEvaluation]:
    """Both agents' evaluations from SOTOPIA's answer shape ``{"agent_1_evaluation": {dim:
    ["reasoning", score], ...}, "agent_2_evaluation": {...}}`` (``{"reasoning", "score"}``
    objects are accepted too). Raises DataError naming the first problem (missing agent or
    dimension, non-integer or out-of-range score): the message is shown to the judge on re-ask."""
    agents = []
    for key in SOTOPIA_AGENT_KEYS:
        block = obj.get(key)
        if not isinstance(block, dict):
            raise DataError(f'"{key}" is missing or not an object; it must map each of {", ".join(DIMENSIONS)} '
                            f'to ["reasoning", integer score]')
        scores, reasoning = {}, {}
        for d in DIMENSIONS:
            low, high = DIMENSION_RANGES[d]
            entry = block.get(d)
            if isinstance(entry, dict):
                entry = [entry.get("reasoning", ""), entry.get("score")]
            if not isinstance(entry, (list, tuple)) or len(entry) != 2:
                raise DataError(f'"{key}"."{d}" must be ["reasoning", integer score from {low} to {high}], '
                                f"got {json.dumps(entry)[:80]}")
            why, score = entry
            if isinstance(score, str) and re.fullmatch(r"-?\d+", score.strip()):
                score = int(score)
            if isinstance(score, bool) or not isinstance(score, int):
                raise DataError(f'"{key}"."{d}" score must be an integer from {low} to {high}, got {score!r}')
            if not low <= score <= high:
                raise DataError(f'"{key}"."{d}" score {score} is out of range; allowed: {low} to {high}')
            scores[d], reasoning[d] = float(score), str(why)
        agents.append(AgentEvaluation(scores=scores, reasoning=reasoning))
    return agents


def parse_sotopia_evaluation(obj: dict) -> list[AgentEvaluation]:
    """Both agents' evaluations from SOTOPIA 0.1.5's answer ``{"evaluations": {"agent_1": {dim:
    ["reasoning", score], ...}, "agent_2": {...}}}``, validated by SOTOPIA's own answer model
    (``EvaluationForAgents[SotopiaDimensions]``: every dimension, integer scores in range); the
    first two evaluations are the two agents, in order, as SOTOPIA reads them."""
    from pydantic import ValidationError

    if "properties" in obj and isinstance(obj["properties"], dict):  # SOTOPIA's parser accepts a schema echo
        obj = obj["properties"]
    try:
        answer = render.sotopia_evaluation_model().model_validate(obj)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        raise DataError(f"{where}: {first['msg']} (expected {{\"evaluations\": {{\"agent_1\": {{dimension: "
                        f"[\"reasoning\", integer score]}}, \"agent_2\": {{...}}}}}})") from None
    evaluations = list(answer.evaluations.values())
    if len(evaluations) < 2:
        raise DataError(f'"evaluations" must hold agent_1 and agent_2, got {", ".join(answer.evaluations)}')
    agents = []
    for evaluation in evaluations[:2]:
        dims = evaluation.model_dump()
        agents.append(AgentEvaluation(scores={d: float(dims[d][1]) for d in DIMENSIONS},
                                      reasoning={d: str(dims[d][0]) for d in DIMENSIONS}))
    return agents


async def ask_json(client, messages: list[dict], validate: Callable[[dict], object], max_reasks: int = 2, *,
                   max_tokens: int = 2048, usage: dict | None = None):
    """Ask ``client`` (an LLMClient) at temperature 0 for a JSON object and return
    ``validate(obj)``. When the answer is not JSON or ``validate`` raises DataError, the answer
    and the error message go back to the model and it is asked again, at most ``max_reasks``
    times; then JudgeError (an APIError) is raised with every problem. ``usage`` (a dict) is
    increased by the tokens, cost, retries and re-asks of every call. APIError from the client
    propagates."""
    from sotopia_env.errors import JudgeError

    conversation = list(messages)
    problems = []
    for ask in range(max_reasks + 1):
        completion = await client.complete(conversation, temperature=0.0, max_tokens=max_tokens)
        if usage is not None:
            for k in ("prompt_tokens", "completion_tokens", "cost"):
                usage[k] = usage.get(k, 0) + getattr(completion, k)
            usage["calls"] = usage.get("calls", 0) + 1
            usage["retries"] = usage.get("retries", 0) + completion.attempts - 1
            usage["reasks"] = usage.get("reasks", 0) + (ask > 0)
        try:
            return validate(extract_json(completion.text))
        except DataError as problem:
            problems.append(str(problem))
            conversation = conversation + [
                {"role": "assistant", "content": completion.text},
                {"role": "user", "content": f"Your answer was invalid: {problem}. Answer again with the complete "
                                            f"JSON object only."}]
    raise JudgeError(f"no valid answer after {max_reasks} re-ask(s): " + " | ".join(problems),
                     attempts=max_reasks + 1)


class LLMJudge:
    """SOTOPIA's episode evaluator on an API model (``gpt-4o``, ``openai/<name>`` + ``api_base``...).
    ``max_reasks`` bounds the re-asks after an invalid answer."""

    def __init__(self, model: str, api_base: str | None = None, max_reasks: int = 2, *, api_key: str | None = None,
                 max_concurrency: int = 8, timeout: float = 120, max_retries: int = 5, max_tokens: int = 2048,
                 prompt_style: str = "native", client=None, **client_settings):
        from .llm_client import LLMClient

        self.model = model
        self.prompt_style = render.check_prompt_style(prompt_style)
        self.name = f"llm:{model}" + (":sotopia" if self.prompt_style == "sotopia" else "")
        self.max_reasks = max_reasks
        self.max_tokens = max_tokens
        self.client = client or LLMClient(model, api_base=api_base, api_key=api_key, max_concurrency=max_concurrency,
                                          timeout=timeout, max_retries=max_retries, **client_settings)

    def __repr__(self) -> str:
        return f"LLMJudge(model={self.model!r}, max_reasks={self.max_reasks}, prompt_style={self.prompt_style!r})"

    async def aevaluate_with_usage(self, record: EpisodeRecord) -> tuple[EpisodeEvaluation, dict]:
        """The evaluation and the judge's token/cost accounting for this episode."""
        usage: dict = {"prompt_tokens": 0, "completion_tokens": 0, "cost": 0.0, "calls": 0, "retries": 0,
                       "reasks": 0}
        try:
            validate = parse_sotopia_evaluation if self.prompt_style == "sotopia" else parse_evaluation
            agents = await ask_json(self.client, judge_messages(record, self.prompt_style), validate,
                                    self.max_reasks, max_tokens=self.max_tokens, usage=usage)
        except FatalAPIError:  # a refused key or unknown model fails every episode alike: the run stops
            raise
        except APIError as e:  # JudgeError included: stored unevaluated, retried by the next run
            return EpisodeEvaluation.failed(self.name, str(e)), usage
        return EpisodeEvaluation(agents=agents, judge=self.name), usage

    async def aevaluate(self, record: EpisodeRecord) -> EpisodeEvaluation:
        return (await self.aevaluate_with_usage(record))[0]

    def evaluate(self, record: EpisodeRecord) -> EpisodeEvaluation:
        return asyncio.run(self.aevaluate(record))


# ------------------------------------------------------------------------- local scoring

def branch_logprobs(model, prefix: Sequence[int], questions: Sequence[Sequence[int]],
                    candidates: Sequence[Sequence[Sequence[int]]]) -> list[list[float]]:
    """Summed log-probabilities of candidate continuations under a causal LM, in ONE forward pass:
    ``[j][k]`` = log p(candidates[j][k] | prefix + questions[j]).

    The prefix, every question and every candidate are packed into one sequence (tree
    attention): a question's tokens see the prefix and their own question; a candidate's tokens
    see the prefix, their question and their own candidate; position ids continue each branch
    as if it stood alone. So the episode text is encoded once for all 14 judge questions, and
    the LM head runs only where a candidate token is predicted.
    """
    import torch

    if not prefix:
        raise DataError("branch_logprobs needs a non-empty prefix")
    device = next(model.parameters()).device
    n = len(prefix)
    ids, positions = list(prefix), list(range(n))
    q_spans, c_spans = [], []
    for q in questions:
        q_spans.append((len(ids), len(ids) + len(q)))
        ids += list(q)
        positions += range(n, n + len(q))
    for j, cands in enumerate(candidates):
        spans = []
        for k, c in enumerate(cands):
            if not c:
                raise DataError(f"candidate {k} of question {j} has no tokens")
            spans.append((len(ids), len(ids) + len(c)))
            ids += list(c)
            start = n + len(questions[j])
            positions += range(start, start + len(c))
        c_spans.append(spans)
    total = len(ids)
    allow = torch.zeros((total, total), dtype=torch.bool)
    allow[:, :n] = True
    allow[:n, :n] = torch.ones(n, n, dtype=torch.bool).tril()
    for j, (q0, q1) in enumerate(q_spans):
        allow[q0:q1, q0:q1] = torch.ones(q1 - q0, q1 - q0, dtype=torch.bool).tril()
        for c0, c1 in c_spans[j]:
            allow[c0:c1, q0:q1] = True
            allow[c0:c1, c0:c1] = torch.ones(c1 - c0, c1 - c0, dtype=torch.bool).tril()
    # Which position predicts each candidate token: the question's last token (or the prefix's),
    # then the candidate's own previous token.
    wanted: list[int] = []
    reads: list[list[list[tuple[int, int]]]] = []
    for j, cands in enumerate(candidates):
        q0, q1 = q_spans[j]
        first = q1 - 1 if q1 > q0 else n - 1
        row = []
        for (c0, _), c in zip(c_spans[j], cands):
            row.append([(len(wanted) + t, c[t]) for t in range(len(c))])
            wanted += [first] + [c0 + t - 1 for t in range(1, len(c))]
        reads.append(row)
    if takes_boolean_mask(model):
        mask = allow  # boolean, True = may attend
    else:
        mask = torch.zeros(allow.shape, dtype=model.dtype).masked_fill(~allow, torch.finfo(model.dtype).min)
    keep = torch.tensor(sorted(set(wanted)), dtype=torch.long)
    where = {p: i for i, p in enumerate(keep.tolist())}
    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([ids], device=device), attention_mask=mask[None, None].to(device),
                       position_ids=torch.tensor([positions], device=device), use_cache=False,
                       logits_to_keep=keep.to(device)).logits[0]
        logp = logits.float().log_softmax(-1)
        at = torch.tensor([where[p] for p in wanted], dtype=torch.long, device=device)
        picked = logp[at]  # (len(wanted), vocab)
        out = [[float(sum(picked[i, tok].item() for i, tok in cand)) for cand in row] for row in reads]
    return out


def score_candidates(model, tokenizer, prompt, candidates: list[str], *, end_of_answer: bool = True) -> list[float]:
    """log p(candidate | prompt) for each candidate string under a local causal LM (summed over its
    tokens). ``prompt`` is chat messages (rendered with the generation prompt) or token ids.
    With ``end_of_answer`` the end-of-turn token is appended to every candidate, so that "1"
    does not also collect the probability of "10"."""
    from .hf_policy import end_of_turn_ids

    if isinstance(prompt, list) and prompt and isinstance(prompt[0], dict):
        text = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
        prompt = tokenizer(text, add_special_tokens=False)["input_ids"]
    end = [tokenizer.eos_token_id if tokenizer.eos_token_id is not None else end_of_turn_ids(tokenizer)[0]]
    cands = [tokenizer(c, add_special_tokens=False)["input_ids"] + (end if end_of_answer else []) for c in candidates]
    return branch_logprobs(model, prompt[:-1], [prompt[-1:]], [cands])[0]


class LocalJudge:
    """The offline judge: the embedded model (or any local causal LM) scores each agent on each
    dimension by the expected value of its answer distribution over the allowed integers.

    ``max_turn_lines`` keeps only the last conversation lines of very long episodes."""

    def __init__(self, model_id: str = "embedded", *, model=None, tokenizer=None, max_turn_lines: int = 40,
                 prompt_style: str = "native"):
        from .models import load_model, load_tokenizer

        self.prompt_style = render.check_prompt_style(prompt_style)
        self.tokenizer = tokenizer if tokenizer is not None else load_tokenizer(model_id)
        self.model = (model if model is not None else load_model(model_id)).eval()
        from .models import model_label

        self.name = f"local:{model_id if model is None else model_label(self.model, model_id)}" + (
            ":sotopia" if self.prompt_style == "sotopia" else "")
        self.max_turn_lines = max_turn_lines
        self._candidates: dict[str, list[list[int]]] = {}
        eos = self.tokenizer.eos_token_id
        for d, (low, high) in DIMENSION_RANGES.items():
            self._candidates[d] = [self.tokenizer(str(v), add_special_tokens=False)["input_ids"] + [eos]
                                   for v in range(low, high + 1)]

    def __repr__(self) -> str:
        return f"LocalJudge(name={self.name!r})"

    def _prompt_pieces(self, record: EpisodeRecord) -> tuple[list[int], list[list[int]], list[tuple[int, str]]]:
        """The shared prefix ids (system + episode), and one question's ids per (agent, dimension)."""
        system = ("You are an impartial evaluator of social interactions. You answer every question with a "
                  "single integer.")
        marker = "\u0000QUESTION\u0000"
        rendered = self.tokenizer.apply_chat_template(
            [{"role": "system", "content": system},
             {"role": "user", "content": render.episode_text(record.task, record.turns, style=self.prompt_style,
                                                             max_turn_lines=self.max_turn_lines) + "\n\n" + marker}],
            tokenize=False, add_generation_prompt=True)
        head, tail = rendered.split(marker)
        prefix = self.tokenizer(head, add_special_tokens=False)["input_ids"]
        questions, keys = [], []
        for i, name in enumerate(record.task.agent_names):
            for d in DIMENSIONS:
                low, high = DIMENSION_RANGES[d]
                # The question's first sentence only: a small model gains little from the long
                # rubric, and 14 questions of it would dominate the judge's tokens.
                ask = DIMENSION_QUESTIONS[d].split("?")[0] + "?"
                q = (f"Question about agent {i + 1}, {name}, dimension {d}: {ask} "
                     f"Answer with a single integer from {low} to {high}.")
                questions.append(self.tokenizer(q + tail, add_special_tokens=False)["input_ids"])
                keys.append((i, d))
        return prefix, questions, keys

    def evaluate(self, record: EpisodeRecord) -> EpisodeEvaluation:
        prefix, questions, keys = self._prompt_pieces(record)
        logps = branch_logprobs(self.model, prefix, questions, [self._candidates[d] for _, d in keys])
        scores: list[dict] = [{}, {}]
        reasoning: list[dict] = [{}, {}]
        for (i, d), lp in zip(keys, logps):
            low, high = DIMENSION_RANGES[d]
            values = list(range(low, high + 1))
            top = max(lp)
            weights = [math.exp(x - top) for x in lp]
            total = sum(weights)
            probs = [w / total for w in weights]
            expected = sum(v * p for v, p in zip(values, probs))
            scores[i][d] = min(high, max(low, expected))
            best = sorted(zip(probs, values), reverse=True)[:3]
            mass = sum(math.exp(x) for x in lp)
            reasoning[i][d] = (f"local judge: expected score {expected:.2f} from P(answer) "
                               + ", ".join(f"{v}: {p:.2f}" for p, v in best)
                               + f" (the allowed integers held {mass:.2f} of the answer probability)")
        agents = [AgentEvaluation(scores=scores[i], reasoning=reasoning[i]) for i in (0, 1)]
        return EpisodeEvaluation(agents=agents, judge=self.name, comment="expected value over allowed integers")

    async def aevaluate_with_usage(self, record: EpisodeRecord) -> tuple[EpisodeEvaluation, dict]:
        evaluation = await asyncio.to_thread(self.evaluate, record)
        return evaluation, {"prompt_tokens": 0, "completion_tokens": 0, "cost": 0.0, "calls": 1}

    async def aevaluate(self, record: EpisodeRecord) -> EpisodeEvaluation:
        return (await self.aevaluate_with_usage(record))[0]
