"""Our pairs as TRL's conversational preference dataset: one JSON line per pair,
``{"prompt": [messages], "chosen": [messages], "rejected": [messages], "pair_id": str}`` with
messages ``{"role", "content"}``, which ``datasets.load_dataset("json", data_files=...)`` reads
and TRL's ``DPOTrainer`` trains on.

Each side is rendered from the trained agent's view by the one formatter (``agents.formatter``,
the layout ``sdpo.tokenize`` trains on: the agent's turns are ``assistant`` messages, the
partner's ``user`` messages, the background in the pair's ``format``). The prompt is the
messages both sides share, ending on a message that is not the agent's (the shared history);
``chosen`` / ``rejected`` are the rest of each side, cut after its segment.

What the format cannot say: TRL's DPOTrainer trains every token after the prompt, so inside a
multi-turn segment the partner's turns count as completion (our SDPO loss keeps them as
context), and so would agent turns of the side before the segment's first turn. A one-turn
segment (the ``dpo`` kind) means the same in both. SFT kinds have no rejected side, and a
pair in the ``sotopia`` prompt style (one user message per turn) has no multi-turn layout:
both are refused.
"""
from __future__ import annotations

from collections.abc import Sequence

from agents.formatter import agent_messages
from sdpo.pairs_schema import PairRecord
from sotopia_env.errors import DataError

from .segment import cut_after_agent_turns


def side_messages(pair: PairRecord, side: str) -> list[dict]:
    """History + ``side``'s turns up to the end of its segment, as the agent's chat messages."""
    last = pair.segment[side][1]
    turns = pair.history + cut_after_agent_turns(getattr(pair, side), pair.agent_index,
                                                 last + 1 - pair.history_agent_turns)
    return agent_messages(pair.task, pair.agent_index, turns, fmt=pair.format)


def trl_record(pair: PairRecord, where: dict | None = None) -> dict:
    """One pair as a TRL conversational preference example (module docstring); ``where`` (``path``,
    ``line``) places a refusal in the pair file."""
    where = where or {}
    if pair.rejected is None:
        raise DataError(f"pair {pair.pair_id!r} is of kind {pair.kind!r}, which has no rejected side; TRL's "
                        "preference format needs both sides", field="rejected", **where)
    if pair.format.prompt_style != "native":
        raise DataError(f"pair {pair.pair_id!r} is in the {pair.format.prompt_style!r} prompt style (one user "
                        "message per turn); TRL's prompt/chosen/rejected needs the native multi-turn layout",
                        field="format.prompt_style", **where)
    chosen, rejected = side_messages(pair, "chosen"), side_messages(pair, "rejected")
    shared = 0
    while shared < min(len(chosen), len(rejected)) and chosen[shared] == rejected[shared]:
        shared += 1
    while shared and chosen[shared - 1]["role"] == "assistant":
        shared -= 1   # the completion starts with the agent's turn
    if not shared or shared == len(chosen) or shared == len(rejected):
        raise DataError(f"pair {pair.pair_id!r}: the two sides share no prompt, or one side has nothing after "
                        "it", field="chosen", **where)
    return {"prompt": chosen[:shared], "chosen": chosen[shared:], "rejected": rejected[shared:],
            "pair_id": pair.pair_id}


def trl_records(pairs: Sequence[PairRecord], path: str | None = None,
                lines: Sequence[int | None] | None = None) -> list[dict]:
    """Every pair as a TRL example; ``path`` and ``lines`` (each pair's line) place a refusal."""
    lines = lines or [None] * len(pairs)
    return [trl_record(p, {"path": path, "line": line}) for p, line in zip(pairs, lines)]
