"""The one conversation formatter: an agent's view of an episode -> chat messages -> tokens.

Rollout (``agents.hf_policy``, ``agents.litellm_policy``) and training (``sdpo.tokenize``)
both go through this module, so the tokens a model trains on are exactly the tokens it saw
when acting.

Message layout (multi-turn, as SDPO trains on):

* ``system``: SOTOPIA's instructions, the scenario, the agent's own background, the partner's
  background as the relationship allows, the agent's own goal (the partner's is "Unknown"),
  and the instruction to answer with one JSON action. With ``system_message=False`` this text
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

from sotopia_env.episode import Turn
from sotopia_env.errors import DataError
from sotopia_env.profiles import VISIBLE_PROFILE_FIELDS, Profile, Task

# Action types a model may choose; "none" is what the env fills in when it is not one's turn.
MODEL_ACTION_TYPES: tuple[str, ...] = ("none", "speak", "non-verbal communication", "action", "leave")
OMITTED_NOTE = "(Earlier turns of the conversation are omitted.)"

_PROFILE_LINES = (  # field -> how it reads in a background
    ("age", "{} years old"), ("gender", "Gender: {}"), ("gender_pronoun", "Pronouns: {}"),
    ("occupation", "Occupation: {}"), ("public_info", "Public info: {}"), ("big_five", "Big Five: {}"),
    ("moral_values", "Moral values: {}"), ("schwartz_personal_values", "Schwartz values: {}"),
    ("personality_and_values", "Personality and values: {}"),
    ("decision_making_style", "Decision-making style: {}"), ("mbti", "MBTI: {}"), ("secret", "Secret: {}"),
)


def describe_profile(profile: Profile, visible: Sequence[str] | None = None) -> str:
    """A profile as background text; ``visible`` limits it to those fields (None: all, secret included)."""
    fields = set(visible) if visible is not None else None
    if fields is not None and not fields:
        return "Unknown."
    name = profile.name if fields is None or "first_name" in fields else "Unknown name"
    parts = [name]
    for key, fmt in _PROFILE_LINES:
        if fields is not None and key not in fields:
            continue
        value = getattr(profile, key)
        if isinstance(value, list):
            value = ", ".join(value)
        if value not in ("", None, 0):
            parts.append(fmt.format(value))
    return "; ".join(parts) + "."


def background(task: Task, agent_index: int, max_turns: int = 20) -> str:
    """What ``agent_index`` knows before the conversation (SOTOPIA's per-agent background)."""
    me, other = task.profiles[agent_index], task.profiles[1 - agent_index]
    other_visible = VISIBLE_PROFILE_FIELDS[task.scenario.relationship]
    other_name = other.name   # both names are always shown (as in SOTOPIA and the env); the profile is not
    return (
        f"Imagine you are {me.name}, your task is to act/speak as {me.name} would, keeping in mind "
        f"{me.name}'s social goal. You can find {me.name}'s background and goal below.\n"
        f"Note: you may not know the other participant's goal, and your secret is yours alone.\n\n"
        f"Scenario: {task.scenario.scenario}\n"
        f"Participants: {me.name} and {other_name}\n"
        f"{me.name}'s background: {describe_profile(me)}\n"
        f"{other_name}'s background: {describe_profile(other, other_visible)}\n"
        f"{me.name}'s goal: {task.scenario.agent_goals[agent_index]}\n"
        f"{other_name}'s goal: Unknown\n\n"
        f"The conversation lasts at most {max_turns} turns. Answer with exactly one JSON object "
        f'{{"action_type": ..., "argument": ...}} and nothing else. "action_type" is one of '
        f'"speak" (argument: what you say), "non-verbal communication" (argument: the gesture), '
        f'"action" (argument: the physical action), "leave" (leave the conversation when your goal '
        f'is reached or cannot be), or "none" (do nothing).'
    )


def render_action(action_type: str, argument: str) -> str:
    """The canonical JSON text of an action, as it appears in every message."""
    return json.dumps({"action_type": action_type, "argument": argument}, ensure_ascii=False)


_JSON_OBJECT = re.compile(r"\{.*\}", re.DOTALL)
_TRUNCATED_ACTION = re.compile(r'^\{\s*"action_type"\s*:\s*"([^"]*)"\s*,\s*"argument"\s*:\s*"((?:[^"\\]|\\.)*)',
                               re.DOTALL)


def _salvage_truncated(text: str) -> tuple[str, str] | None:
    """A JSON action cut off by the reply budget (``{"action_type": "speak", "argument": "Hel``):
    its action type and the argument text it got to; None if it is not one."""
    match = _TRUNCATED_ACTION.match(text)
    if not match or match.group(1) not in MODEL_ACTION_TYPES:
        return None
    raw = match.group(2)
    for cut in range(len(raw), max(len(raw) - 6, -1), -1):   # an escape cut in half: drop its start
        try:
            return match.group(1), json.loads('"' + raw[:cut] + '"')
        except json.JSONDecodeError:
            continue
    return None


def parse_action(text: str) -> tuple[str, str, bool]:
    """Read a model's reply as ``(action_type, argument, fallback)``.

    The reply should be SOTOPIA's JSON action. A JSON action cut off by the reply budget keeps
    its action type and the argument text it reached; anything else is read as plain speech.
    Both are fallbacks (``fallback=True``; the episode record counts them). An empty reply is ``none``.
    """
    stripped = text.strip()
    match = _JSON_OBJECT.search(stripped)
    if match:
        try:
            obj = json.loads(match.group(0))
        except json.JSONDecodeError:
            obj = None
        if isinstance(obj, dict) and obj.get("action_type") in MODEL_ACTION_TYPES:
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
    bg = background(task, agent_index, fmt.max_turns)
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
                         "content": head + render_action(turns[first].action_type, turns[first].argument)})
        index.append([first])
    for i in visible:
        t = turns[i]
        role = "assistant" if t.agent_index == agent_index else "user"
        text = render_action(t.action_type, t.argument)
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
