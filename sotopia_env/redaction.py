"""The one redaction point: API keys and bearer tokens are masked in everything written or printed.

``redact(text)`` replaces with ``***``:

* the value of every key-like environment variable: a name with a ``KEY``, ``APIKEY``,
  ``TOKEN``, ``SECRET`` or ``PASSWORD`` part (``OPENAI_API_KEY``, ``HF_TOKEN``,
  ``AWS_SECRET_ACCESS_KEY``, ``WATSONX_APIKEY``...; every key variable LiteLLM reads has that
  form), read when called, so a key set after start-up is masked too;
* every key a client was handed in code (``register_secret``: ``api_key=`` arguments);
* the token of any ``Bearer <token>`` (a server may echo the Authorization header in its error).

Values shorter than ``MIN_SECRET_LENGTH`` characters are left alone: no real key is that short,
and masking ``test`` or ``1`` would garble ordinary text. Callers: the JSONL writers (episode
records, stage ledgers), the config and results writers, API error messages, the command-line
error line and its traceback, and every log record (``install_log_redaction``).
"""
from __future__ import annotations

import logging
import os
import re
from typing import Any

MASK = "***"
MIN_SECRET_LENGTH = 8
"""Shorter values are not treated as secrets."""

_SECRET_NAME = re.compile(r"(?:^|_)(?:KEY|APIKEY|TOKEN|SECRET|PASSWORD|PASSWD)(?:_|$)", re.IGNORECASE)
_BEARER = re.compile(r"(\bBearer\s+)[^\s\"'`,;)\]}]+", re.IGNORECASE)
_registered: set[str] = set()


def is_secret_name(name: str) -> bool:
    """True for an environment variable name that holds a key (OPENAI_API_KEY, HF_TOKEN...)."""
    return bool(_SECRET_NAME.search(name))


def register_secret(value: str | None) -> None:
    """Mask ``value`` from now on (a key given in code rather than through the environment)."""
    if value and len(value) >= MIN_SECRET_LENGTH:
        _registered.add(value)


def secret_values() -> list[str]:
    """Every value ``redact`` masks, longest first (so a key that contains another goes whole)."""
    found = {v for k, v in os.environ.items() if len(v) >= MIN_SECRET_LENGTH and is_secret_name(k)}
    return sorted(found | _registered, key=len, reverse=True)


def redact(text: str) -> str:
    """``text`` with every secret value and bearer token replaced by ``***``."""
    if not text:
        return text
    for secret in secret_values():
        if secret in text:
            text = text.replace(secret, MASK)
    return _BEARER.sub(r"\g<1>" + MASK, text)


def _redact_record(record: logging.LogRecord) -> None:
    try:
        message = record.getMessage()
    except Exception:  # noqa: BLE001 - a malformed call is reported by the handler, as without redaction
        return
    record.msg, record.args = redact(message), None
    if record.exc_info and not record.exc_text:
        # Formatters print exc_text when it is set: the traceback text is redacted once, here.
        record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
    if record.stack_info:
        record.stack_info = redact(record.stack_info)


def install_log_redaction() -> None:
    """Redact every log record as it is made (message, arguments, traceback), whichever logger
    (LiteLLM's, httpx's, ours) made it and whichever handler writes it: a filter at record
    creation reaches the records of every logger, where a logger's own filter misses its
    children's. Installing it again is a no-op."""
    previous = logging.getLogRecordFactory()
    if getattr(previous, "redacts", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        _redact_record(record)
        return record

    factory.redacts = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)
