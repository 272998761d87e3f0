"""SOTOPIA's rule-based termination evaluator: when does an episode end?

An episode ends (SOTOPIA, "Termination") when

* an agent takes the ``leave`` action (reason ``"leave"``),
* more than ``max_stale_turns`` consecutive turns passed in which every agent whose turn it
  was did nothing (action ``none``; reason ``"stale"``), or
* ``max_turns`` turns have been played (reason ``"max_turns"``).

When several rules fire on the same turn, the reason is the first of that list. The
environment keeps the counters incrementally (``step`` is hot); ``reason_for_history``
recomputes the verdict from a whole history, for records and for branch resets.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .episode import Turn
from .errors import ConfigError

TERMINATION_REASONS: tuple[str, ...] = ("leave", "stale", "max_turns")
TIME_LIMIT = "max_turns"
"""The reason that is a time limit: the env reports it as a truncation (PettingZoo's convention)."""


@dataclass(frozen=True)
class RuleBasedTermination:
    """The three ending rules with their limits (SOTOPIA's ``RuleBasedTerminatedEvaluator``).

    ``max_turns``: turns in an episode (a turn is one step of the env; in round-robin order one
    agent acts per turn, so 20 turns are 10 actions per agent). ``max_stale_turns``: how many
    consecutive all-``none`` turns are tolerated; one more ends the episode.
    """

    max_turns: int = 20
    max_stale_turns: int = 2

    def __post_init__(self):
        if isinstance(self.max_turns, bool) or not isinstance(self.max_turns, int) or self.max_turns < 1:
            raise ConfigError(f"max_turns must be an integer >= 1, got {self.max_turns!r}")
        if (
            isinstance(self.max_stale_turns, bool)
            or not isinstance(self.max_stale_turns, int)
            or self.max_stale_turns < 0
        ):
            raise ConfigError(f"max_stale_turns must be an integer >= 0, got {self.max_stale_turns!r}")

    def reason(self, turns_played: int, stale_turns: int, left: bool) -> str | None:
        """The termination reason after a turn, or None if the episode goes on.

        ``turns_played``: the turn counter after the turn; ``stale_turns``: consecutive all-``none``
        turns ending with this one; ``left``: someone took ``leave`` this turn.
        """
        if left:
            return "leave"
        if stale_turns > self.max_stale_turns:
            return "stale"
        if turns_played >= self.max_turns:
            return "max_turns"
        return None

    def reason_for_history(self, turns: Sequence[Turn]) -> tuple[str | None, int]:
        """Replay a whole history (turns grouped by their turn counter) and return
        ``(reason, index)``: why and at which index of ``turns`` the episode ended, or
        ``(None, len(turns))`` if it had not ended."""
        stale = 0
        i = 0
        while i < len(turns):
            turn = turns[i].turn
            j = i
            while j < len(turns) and turns[j].turn == turn:
                j += 1
            actions = [t.action_type for t in turns[i:j]]
            stale = stale + 1 if all(a == "none" for a in actions) else 0
            reason = self.reason(turn + 1, stale, "leave" in actions)
            if reason is not None:
                return reason, j - 1
            i = j
        return None, len(turns)
