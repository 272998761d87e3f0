"""Pair records -> token sequences with segment labels and a per-token turn index.

Each side of a pair is one sequence: the shared history plus that side's turns, rendered from
the trained agent's view by the one formatter (``agents.formatter``), so the tokens trained on
are the tokens the policy saw at rollout. Only the trained agent's turns inside the segment are
targets; every target token carries the index of its turn within the segment (0 = the error
turn), so the fit loop can sum token log-probs into per-turn log-probs.

Under ``prompt_style="sotopia"`` a turn's prompt is SOTOPIA's one user message holding the whole
history, so a side runs as several rows, one per trained turn of the segment (that turn's
prompt and the agent's JSON action), each exactly what the policy saw when it acted; such
pairs share no prefix and are not truncated (SOTOPIA sends the whole history): a row longer than
``max_length`` skips the pair.

Native truncation to ``max_length`` (4096 by default, counted per side) drops whole turns from the
start of the shared history, the same turns on both sides, and notes the omission in the first
user message. The background (system message) and the segment's turns are never dropped: the
segment lies in each side's own turns (``sdpo.pairs_schema``), and only history is cut. A pair
that does not fit with the whole history dropped is skipped and counted.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from agents.formatter import ConversationTokenizer, agent_messages_with_turns
from sotopia_env.episode import Turn
from sotopia_env.render import action_json

from .pairs_schema import PairRecord

NO_TURN = -1
"""Turn index of a context token (not a target)."""


@dataclass
class TokenizedSide:
    """One side of a pair as one sequence.

    ``input_ids``: (length,) token ids. ``turn_index``: (length,) for each token, the index
    within the segment (0..n_turns-1) of the trained-agent turn it belongs to when the token is
    a target (predicted from the previous position), else ``NO_TURN``. ``n_turns``: the segment
    length in agent turns (a turn with no tokens, e.g. a skipped ``none`` action, has log-prob 0).
    """

    input_ids: list[int]
    turn_index: list[int]
    n_turns: int
    rows: list[tuple[list[int], list[int]]] = field(default_factory=list)
    """Under the sotopia prompt style: the side's rows, ``(input_ids, turn_index)`` per trained
    turn; ``input_ids`` and ``turn_index`` are then their concatenation (for counting only)."""

    @property
    def n_targets(self) -> int:
        return sum(1 for t in self.turn_index if t != NO_TURN)

    @property
    def first_target(self) -> int:
        return next(i for i, t in enumerate(self.turn_index) if t != NO_TURN) if self.n_targets else len(self.input_ids)


@dataclass
class TokenizedPair:
    """A tokenized pair. ``prefix_len``: length of the token prefix shared by both sides that
    holds no target (computed once per pair under prefix sharing); ``omitted``: how many of the
    oldest history turns truncation dropped. ``rejected`` is None for the SFT kinds."""

    pair_id: str
    kind: str
    chosen: TokenizedSide
    rejected: TokenizedSide | None
    prefix_len: int
    omitted: int = 0

    @property
    def n_tokens(self) -> int:
        """Tokens of the packed sequence [prefix | chosen rest | rejected rest]."""
        if self.rejected is None:
            return len(self.chosen.input_ids)
        return len(self.chosen.input_ids) + len(self.rejected.input_ids) - self.prefix_len


@dataclass
class TokenizeStats:
    """What tokenization did to a pair file: pairs kept, truncated (history shortened) and skipped
    (too long even without history), with the ids of the skipped ones."""

    kept: int = 0
    truncated: int = 0
    skipped: int = 0
    skipped_ids: list[str] = field(default_factory=list)


def _turn_owners(conv: ConversationTokenizer, span_ids: list[int], n_turns: int) -> list[int]:
    """For an assistant message holding ``n_turns`` of the agent's turns (one JSON action per line),
    which of them each token of its span belongs to (0..n_turns-1). The formatter joins turns with
    newlines; a token belongs to the turn its first character falls in (end-of-turn tokens to the
    last turn)."""
    if n_turns == 1:
        return [0] * len(span_ids)
    text = conv.tokenizer.decode(span_ids)
    # json.dumps escapes newlines inside an action, so the first n_turns-1 newlines separate turns.
    boundaries, at = [], -1
    for _ in range(n_turns - 1):
        at = text.find("\n", at + 1)
        if at < 0:
            break
        boundaries.append(at + 1)
    owners: list[int] = []
    for j in range(len(span_ids)):
        start = len(conv.tokenizer.decode(span_ids[:j]))  # where token j starts in the message text
        owners.append(sum(1 for b in boundaries if b <= start))
    return owners


def _tokenize_side_per_turn(conv: ConversationTokenizer, pair: PairRecord, side: str) -> TokenizedSide:
    """The sotopia layout: one row per trained turn of the segment, its prompt as the policy saw it."""
    turns = list(pair.history) + list(getattr(pair, side))
    first, last = pair.segment[side]
    rows: list[tuple[list[int], list[int]]] = []
    number = -1
    for i, t in enumerate(turns):
        if t.agent_index != pair.agent_index:
            continue
        number += 1
        if not first <= number <= last or t.action_type == "none" and pair.format.skip_none:
            continue
        prompt, _ = agent_messages_with_turns(pair.task, pair.agent_index, turns[:i], fmt=pair.format)
        encoded = conv.encode_session(prompt + [{"role": "assistant", "content": action_json(t.action_type,
                                                                                             t.argument)}])
        (start, end), = encoded.assistant_spans
        index = [NO_TURN] * start + [number - first] * (end - start) + [NO_TURN] * (len(encoded.input_ids) - end)
        rows.append((encoded.input_ids, index))
    return TokenizedSide(input_ids=[x for ids, _ in rows for x in ids], turn_index=[k for _, ti in rows for k in ti],
                         n_turns=last - first + 1, rows=rows)


def tokenize_side(conv: ConversationTokenizer, pair: PairRecord, side: str, omitted: int = 0) -> TokenizedSide:
    """Tokenize history[omitted:] + ``side``'s turns from the trained agent's view (see module doc)."""
    if pair.format.prompt_style == "sotopia":
        return _tokenize_side_per_turn(conv, pair, side)
    history = pair.history[omitted:]
    side_turns: Sequence[Turn] = getattr(pair, side)
    turns = list(history) + list(side_turns)
    first, last = pair.segment[side]
    # Agent turns dropped with the history still count in the segment's indices.
    agent_turns_before = sum(1 for t in pair.history[:omitted] if t.agent_index == pair.agent_index)
    agent_number: dict[int, int] = {}
    for i, t in enumerate(turns):
        if t.agent_index == pair.agent_index:
            agent_number[i] = agent_turns_before + len(agent_number)
    messages, message_turns = agent_messages_with_turns(pair.task, pair.agent_index, turns, fmt=pair.format,
                                                       omitted=omitted)
    encoded = conv.encode_session(messages)
    turn_index = [NO_TURN] * len(encoded.input_ids)
    assistant_turns = [idx for m, idx in zip(messages, message_turns) if m["role"] == "assistant"]
    for (start, end), idx in zip(encoded.assistant_spans, assistant_turns):
        owners = _turn_owners(conv, encoded.input_ids[start:end], len(idx))
        for pos, owner in zip(range(start, end), owners):
            number = agent_number[idx[owner]]
            if first <= number <= last:
                turn_index[pos] = number - first
    return TokenizedSide(input_ids=encoded.input_ids, turn_index=turn_index, n_turns=last - first + 1)


def shared_prefix_len(chosen: TokenizedSide, rejected: TokenizedSide) -> int:
    """Length of the common token prefix of both sides that holds no target token, kept at
    least one token short of either side so each branch of the packed sequence is non-empty."""
    limit = min(chosen.first_target, rejected.first_target, len(chosen.input_ids) - 1,
                len(rejected.input_ids) - 1)
    n = 0
    while n < limit and chosen.input_ids[n] == rejected.input_ids[n]:
        n += 1
    return n


def tokenize_pair(conv: ConversationTokenizer, pair: PairRecord, max_length: int = 4096) -> TokenizedPair | None:
    """Tokenize a pair, dropping the oldest history turns until every side fits ``max_length``
    tokens; None when it does not fit even with no history left."""
    if pair.format.prompt_style == "sotopia":
        sides = {side: tokenize_side(conv, pair, side) for side in pair.sides}
        if max(len(ids) for s in sides.values() for ids, _ in s.rows or [([], [])]) > max_length:
            return None
        return TokenizedPair(pair_id=pair.pair_id, kind=pair.kind, chosen=sides["chosen"],
                             rejected=sides.get("rejected"), prefix_len=0)
    for omitted in range(len(pair.history) + 1):
        sides = {side: tokenize_side(conv, pair, side, omitted) for side in pair.sides}
        if max(len(s.input_ids) for s in sides.values()) <= max_length:
            chosen, rejected = sides["chosen"], sides.get("rejected")
            prefix = shared_prefix_len(chosen, rejected) if rejected is not None else 0
            return TokenizedPair(pair_id=pair.pair_id, kind=pair.kind, chosen=chosen, rejected=rejected,
                                 prefix_len=prefix, omitted=omitted)
    return None


def tokenize_pairs(conv: ConversationTokenizer, pairs: Sequence[PairRecord], max_length: int = 4096,
                   progress: bool = False) -> tuple[list[TokenizedPair], TokenizeStats]:
    """Tokenize every pair; pairs that cannot fit are skipped and counted in the stats."""
    from tqdm import tqdm

    stats = TokenizeStats()
    out: list[TokenizedPair] = []
    for pair in tqdm(pairs, desc="tokenize", disable=not progress):
        tokenized = tokenize_pair(conv, pair, max_length)
        if tokenized is None:
            stats.skipped += 1
            stats.skipped_ids.append(pair.pair_id)
            continue
        stats.kept += 1
        stats.truncated += tokenized.omitted > 0
        out.append(tokenized)
    return out, stats
