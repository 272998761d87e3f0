"""Stage files: the append-only JSONL ledgers that make every stage resumable.

Each stage appends one JSON line per finished item (a negative, keyed ``"<episode_id>:<seat>"``)
as soon as it is finished, flushed and fsynced (``sotopia_env.episode.append_jsonl``). A
restarted run reads the file and skips every key already there with a *final* status, so no
judge or model call is made twice for finished work. An item whose call failed for good
(status ``error``: API down, out of retries) is not final and is tried again on the next run;
an item the judge answered invalidly ``max_reasks`` times is final (status ``skipped``).
"""
from __future__ import annotations

import os
from enum import Enum
from pathlib import Path
from typing import TypedDict

from sotopia_env.episode import append_jsonl, read_jsonl


class Status(str, Enum):
    """The status of a stage entry. A ``str`` Enum: it is written to the ledger as its plain value
    (``"ok"``), and compares equal to the strings read back from older ledgers."""

    ok = "ok"
    """Answered (locate, segment)."""
    kept = "kept"
    """A positive was found (sample, scratch)."""
    dropped = "dropped"
    """No usable positive (sample, scratch): final."""
    skipped = "skipped"
    """Nothing to ask, or the judge answered invalidly ``max_reasks`` times: final."""
    error = "error"
    """The call failed for good (API down, out of retries): retried on the next run."""

    def __str__(self) -> str:       # the value in f-strings and str(), on every Python version
        return self.value

    __format__ = str.__format__


FINAL_STATUSES = (Status.ok, Status.kept, Status.dropped, Status.skipped)
RETRY_STATUSES = (Status.error,)


class StageEntry(TypedDict, total=False):
    """One ledger line: ``key`` and ``status`` always; the rest depends on the stage (the index
    or segment found, the candidates, the judge's answers and the calls' accounting). Extra
    fields are kept as written."""

    key: str
    status: Status
    reason: str
    judge: str
    calls: int
    local_calls: int
    cost: float


class StageFile:
    """One stage's ledger: ``<out_dir>/<name>.jsonl``, one ``{"key", "status", ...}`` per line."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def entries(self) -> dict[str, StageEntry]:
        """The latest entry of each key (a retried key's later line supersedes its error line)."""
        latest: dict[str, StageEntry] = {}
        for _, obj in read_jsonl(self.path):
            latest[obj["key"]] = obj
        return latest

    def final(self) -> dict[str, StageEntry]:
        """Entries whose work is finished (to be skipped on resume)."""
        return {k: e for k, e in self.entries().items() if e.get("status") in FINAL_STATUSES}

    def all_lines(self) -> list[StageEntry]:
        """Every line, errors included (for counting calls and cost of the whole run)."""
        return [obj for _, obj in read_jsonl(self.path)]

    def append(self, entry: StageEntry) -> None:
        if "key" not in entry or "status" not in entry:
            raise ValueError("a stage entry needs 'key' and 'status'")  # internal invariant
        append_jsonl(self.path, entry)
