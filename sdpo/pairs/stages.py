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
from pathlib import Path

from sotopia_env.episode import append_jsonl, read_jsonl

FINAL_STATUSES = ("ok", "kept", "dropped", "skipped")
RETRY_STATUSES = ("error",)


class StageFile:
    """One stage's ledger: ``<out_dir>/<name>.jsonl``, one ``{"key", "status", ...}`` per line."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def entries(self) -> dict[str, dict]:
        """The latest entry of each key (a retried key's later line supersedes its error line)."""
        latest: dict[str, dict] = {}
        for _, obj in read_jsonl(self.path):
            latest[obj["key"]] = obj
        return latest

    def final(self) -> dict[str, dict]:
        """Entries whose work is finished (to be skipped on resume)."""
        return {k: e for k, e in self.entries().items() if e.get("status") in FINAL_STATUSES}

    def all_lines(self) -> list[dict]:
        """Every line, errors included (for counting calls and cost of the whole run)."""
        return [obj for _, obj in read_jsonl(self.path)]

    def append(self, entry: dict) -> None:
        if "key" not in entry or "status" not in entry:
            raise ValueError("a stage entry needs 'key' and 'status'")  # internal invariant
        append_jsonl(self.path, entry)
