"""The one conversation formatter: an agent's view of an episode -> chat messages -> tokens.

Rollout (``agents.hf_policy``, ``agents.litellm_policy``) and training (``sdpo.tokenize``)
both go through this module, so the tokens a model trains on are exactly the tokens it saw
when acting.

Every text comes from ``sotopia_env.render``, in the format's ``prompt_style``. Under
``sotopia`` a turn's prompt is SOTOPIA 0.1.5's single user message (history, turn number,
action list, leave rules, format instructions). The ``native`` layout is multi-turn, as SDPO
trains on:

* ``system``: the instructions (who the agent plays, the JSON action format, when to leave),
  then the background: the scenario, the participants, the agent's own profile, the partner's
  as the relationship allows, the agent's own goal (the partner's is "Unknown"). With ``system_message=False`` this text
  opens the first user message instead (the authors' layout; note that some chat templates,
  SmolLM2's and Llama-3.1's among them, then insert a default system block of their own).
* first ``user`` message: ``Conversation Starts:`` and either a note that the agent speaks
  first or the partner's first action.
* then the partner's actions as ``user`` messages and the agent's own actions as
  ``assistant`` messages, each as the JSON action ``{"action_type": ..., "argument": ...}``;
  consecutive actions of the same side are merged into one message, one per line.
"""
from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from sotopia_env import render
from sotopia_env.episode import ACTION_TYPES, Turn
from sotopia_env.errors import DataError
from sotopia_env.profiles import Task
from sotopia_env.render import OMITTED_NOTE, action_json


def system_text(task: Task, agent_index: int, max_turns: int = 20) -> str:
    """The native style's opening text for ``agent_index``: the instructions, then its background."""
    return (render.agent_instructions(task.agent_names[agent_index], max_turns) + "\n\n"
            + render.background(task, agent_index))


_JSON_OBJECT = re.compile(r"\{.*\}", re.DOTALL)
_TRUNCATED_ACTION = re.compile(r'^\{\s*"action_type"\s*:\s*"([^"]*)"\s*,\s*"argument"\s*:\s*"((?:[^"\\]|\\.)*)',
                               re.DOTALL)


def _salvage_truncated(text: str) -> tuple[str, str] | None:
    """A JSON action cut off by the reply budget (``{"action_type": "speak", "argument": "Hel``):
    its action type and the argument text it got to; None if it is not one."""
    match = _TRUNCATED_ACTION.match(text)
    if not match or match.group(1) not in ACTION_TYPES:
        return None
    raw = match.group(2)
    for cut in range(len(raw), max(len(raw) - 6, -1), -1):   # an escape cut in half: drop its start
        try:
            return match.group(1), json.loads('"' + raw[:cut] + '"')
        except json.JSONDecodeError:
            continue
    return None


def parse_action(text: str, prompt_style: str = "native") -> tuple[str, str, bool]:
    """Read a model's reply as ``(action_type, argument, fallback)``.

    The reply should be SOTOPIA's JSON action (under ``prompt_style="sotopia"`` it is first read
    with SOTOPIA's own parser, which repairs JSON). A JSON action cut off by the reply budget keeps
    its action type and the argument text it reached; anything else is read as plain speech.
    Both are fallbacks (``fallback=True``; the episode record counts them). An empty reply is ``none``.
    """
    if prompt_style == "sotopia":
        parsed = render.parse_sotopia_action(text)
        if parsed is not None:
            return parsed[0], parsed[1], False
    stripped = text.strip()
    match = _JSON_OBJECT.search(stripped)
    if match:
        try:
            obj = json.loads(match.group(0))
        except json.JSONDecodeError:
            obj = None
        if isinstance(obj, dict) and obj.get("action_type") in ACTION_TYPES:
            argument = obj.get("argument", "")
            return obj["action_type"], argument if isinstance(argument, str) else json.dumps(argument), False
    if not stripped:
        return "none", "", True
    salvaged = _salvage_truncated(stripped)
    if salvaged is not None:
        return salvaged[0], salvaged[1], True
    return "speak", stripped.strip('"'), True


@dataclass
class ConversationFormat:
    """Options of the formatter; saved with every artifact so a run states its format."""

    system_message: bool = True
    """Background in a system message (True) or at the head of the first user message (the authors' layout)."""
    max_turns: int = 20
    skip_none: bool = True
    """Leave out ``none`` actions (doing nothing) from the messages, as SOTOPIA's history does."""
    prompt_style: str = "native"
    """``native``: the multi-turn chat layout above; ``sotopia``: SOTOPIA 0.1.5's one user message
    per turn, byte for byte (``sotopia_env.render``; needs the ``sotopia`` package)."""


def agent_messages(task: Task, agent_index: int, turns: Sequence[Turn], *,
                   fmt: ConversationFormat | None = None, omitted: int = 0) -> list[dict]:
    """Chat messages of the episode so far, from ``agent_index``'s side.

    ``turns`` are the turns already taken (the env's history). ``omitted`` > 0 says that the
    oldest turns were dropped to fit the context; a note says so in the first user message.
    """
    return agent_messages_with_turns(task, agent_index, turns, fmt=fmt, omitted=omitted)[0]


def agent_messages_with_turns(task: Task, agent_index: int, turns: Sequence[Turn], *,
                              fmt: ConversationFormat | None = None,
                              omitted: int = 0) -> tuple[list[dict], list[list[int]]]:
    """``agent_messages`` plus, for each message, the indices into ``turns`` it renders
    (an assistant message may hold several of the agent's turns when the partner did nothing)."""
    fmt = fmt or ConversationFormat()
    if agent_index not in (0, 1):
        raise DataError(f"agent_index must be 0 or 1, got {agent_index!r}")
    if fmt.prompt_style == "sotopia":
        turn = turns[-1].turn + 1 if turns else 0
        prompt = render.sotopia_action_prompt(task, agent_index, turns, turn)
        return [{"role": "user", "content": prompt}], [list(range(len(turns)))]
    bg = system_text(task, agent_index, fmt.max_turns)
    messages: list[dict] = [{"role": "system", "content": bg}] if fmt.system_message else []
    head = "" if fmt.system_message else bg + "\n\n"
    head += "Conversation Starts:\n" + (OMITTED_NOTE + "\n" if omitted else "")
    index: list[list[int]] = [[]] if fmt.system_message else []
    visible = [i for i, t in enumerate(turns) if not (fmt.skip_none and t.action_type == "none")]
    if not visible or turns[visible[0]].agent_index == agent_index:
        opening = head + ("You speak first." if not omitted else "")
        messages.append({"role": "user", "content": opening.rstrip("\n")})
        index.append([])
    else:
        first = visible.pop(0)
        messages.append({"role": "user",
                         "content": head + action_json(turns[first].action_type, turns[first].argument)})
        index.append([first])
    for i in visible:
        t = turns[i]
        role = "assistant" if t.agent_index == agent_index else "user"
        text = action_json(t.action_type, t.argument)
        if messages[-1]["role"] == role:
            messages[-1] = {"role": role, "content": messages[-1]["content"] + "\n" + text}
            index[-1].append(i)
        else:
            messages.append({"role": role, "content": text})
            index.append([i])
    return messages, index


@dataclass
class EncodedSession:
    """A tokenized conversation: ``input_ids`` and, for each assistant message, the token span
    ``[start, end)`` of its content plus the end-of-turn tokens (what the model must produce)."""

    input_ids: list[int]
    assistant_spans: list[tuple[int, int]] = field(default_factory=list)


class ConversationTokenizer:
    """Tokenizes messages with a model's chat template, piece by piece at message boundaries,
    so that the prompt of every turn is an exact token prefix of the whole session.

    ``prompt_ids(messages)`` is what a local policy feeds to ``generate`` before the agent's
    turn; ``encode_session(messages)`` is what ``sdpo`` trains on. For every assistant message
    k, ``encode_session(m).input_ids[:spans[k][0]] == prompt_ids(m[:index of k])``.
    """

    def __init__(self, tokenizer):
        if getattr(tokenizer, "chat_template", None) is None:
            raise DataError(f"tokenizer {getattr(tokenizer, 'name_or_path', '?')!r} has no chat template")
        self.tokenizer = tokenizer

    @property
    def chat_template(self) -> str:
        return self.tokenizer.chat_template

    def _render(self, messages: list[dict], generation_prompt: bool) -> str:
        if not messages:
            return ""
        return self.tokenizer.apply_chat_template(messages, tokenize=False,
                                                  add_generation_prompt=generation_prompt)

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _pieces(self, messages: list[dict]) -> list[tuple[str, str]]:
        """Split the rendered conversation into (kind, text) pieces at message boundaries;
        kind is "context" or "target" (an assistant message's content and end of turn)."""
        pieces: list[tuple[str, str]] = []
        done = ""
        for i, msg in enumerate(messages):
            full = self._render(messages[: i + 1], False)
            if msg["role"] == "assistant":
                prompt = self._render(messages[:i], True)
                if not prompt.startswith(done) or not full.startswith(prompt):
                    raise DataError(
                        "the chat template is not prefix-stable at an assistant turn (rendering a longer "
                        "conversation changes earlier text), so rollout and training tokens could differ")
                pieces.append(("context", prompt[len(done):]))
                pieces.append(("target", full[len(prompt):]))
            else:
                if not full.startswith(done):
                    raise DataError("the chat template is not prefix-stable (rendering a longer conversation "
                                    "changes earlier text), so rollout and training tokens could differ")
                pieces.append(("context", full[len(done):]))
            done = full
        return pieces

    def prompt_ids(self, messages: list[dict]) -> list[int]:
        """Token ids of the prompt for the agent's next turn (generation prompt included)."""
        ids: list[int] = []
        for _, text in self._pieces(messages):
            ids += self._encode(text)
        full = self._render(messages, True)
        done = self._render(messages, False)
        return ids + self._encode(full[len(done):])

    def encode_session(self, messages: list[dict]) -> EncodedSession:
        ids: list[int] = []
        spans: list[tuple[int, int]] = []
        for kind, text in self._pieces(messages):
            piece = self._encode(text)
            if kind == "target":
                spans.append((len(ids), len(ids) + len(piece)))
            ids += piece
        return EncodedSession(input_ids=ids, assistant_spans=spans)


def fit_messages(task: Task, agent_index: int, turns: Sequence[Turn], count_tokens, budget: int | None, *,
                 fmt: ConversationFormat | None = None) -> tuple[list[dict], int]:
    """The agent's messages with the fewest oldest turns dropped so that ``count_tokens(messages)``
    is at most ``budget`` (whole turns only; the background and the turn being generated are
    never dropped). Returns ``(messages, omitted)``: ``omitted`` turns of ``turns`` were left out.

    ``count_tokens(messages) -> int`` is the prompt length in the policy's tokens. Raises
    DataError when even the background alone does not fit.
    """
    messages = agent_messages(task, agent_index, turns, fmt=fmt)
    if budget is None or count_tokens(messages) <= budget:
        return messages, 0
    if fmt is not None and fmt.prompt_style == "sotopia":
        raise DataError(f"SOTOPIA's prompt for {task.profiles[agent_index].name!r} in task {task.pk!r} takes "
                        f"{count_tokens(messages)} tokens, more than the context budget of {budget}; SOTOPIA "
                        f"sends the whole history, so use a model with a longer context or fewer max_turns")
    lo, hi = 1, len(turns)  # fewest dropped turns that fit lies in [lo, hi]; hi = all of them
    last = agent_messages(task, agent_index, [], fmt=fmt, omitted=1)
    if count_tokens(last) > budget:
        raise DataError(f"the background of {task.profiles[agent_index].name!r} in task {task.pk!r} takes "
                        f"{count_tokens(last)} tokens, more than the context budget of {budget}")
    while lo < hi:  # the prompt only shrinks as more turns are dropped, so bisect
        mid = (lo + hi) // 2
        if count_tokens(agent_messages(task, agent_index, turns[mid:], fmt=fmt, omitted=mid)) <= budget:
            hi = mid
        else:
            lo = mid + 1
    return agent_messages(task, agent_index, turns[hi:], fmt=fmt, omitted=hi), hi
