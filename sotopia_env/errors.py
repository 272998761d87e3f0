"""Exception types shared by every layer (the bottom of the data flow).

A user's mistake gets one sentence naming what was wrong, where, and what is allowed.
"""
from __future__ import annotations

from enum import Enum
from typing import Any, TypedDict, TypeVar

E = TypeVar("E", bound=Enum)


class SotopiaError(Exception):
    """Base class of every error this package raises on purpose."""


class Where(TypedDict):
    """Where a record comes from: DataError's ``path`` and ``line``, spread into it (and into the
    ``from_dict`` of every record type) as ``**where``."""

    path: str | None
    line: int | None


class DataError(SotopiaError, ValueError):
    """A file or record is malformed. The message names the file, the line and the field."""

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None,
                 field: str | None = None):
        where = []
        if path is not None:
            where.append(str(path))
        if line is not None:
            where.append(f"line {line}")
        prefix = " ".join(where)
        if field is not None:
            prefix = f"{prefix}: field {field!r}" if prefix else f"field {field!r}"
        super().__init__(f"{prefix}: {message}" if prefix else message)
        self.path, self.line, self.field = path, line, field


class ConfigError(SotopiaError, ValueError):
    """A configuration value is not allowed. The message names the option and the allowed values."""


def to_enum(kind: type[E], value: Any, option: str) -> E:
    """``value`` (a member of ``kind`` or its value, e.g. a string from the command line or a
    YAML file) as a member of ``kind``; otherwise ConfigError
    ``"<option>=<value> is not allowed; allowed: a, b, c"``. The one conversion every config's
    ``__post_init__`` uses for its Enum options."""
    if isinstance(value, kind):
        return value
    try:
        return kind(value)
    except ValueError:
        allowed = ", ".join(str(m.value) for m in kind)
        raise ConfigError(f"{option}={value!r} is not allowed; allowed: {allowed}") from None


class APIError(SotopiaError, RuntimeError):
    """A model or judge API call failed for good (after retries, or on a non-retryable error)."""

    def __init__(self, message: str, *, attempts: int | None = None):
        if attempts is not None:
            message = f"{message} (after {attempts} attempt{'s' if attempts != 1 else ''})"
        super().__init__(message)
        self.attempts = attempts


class FatalAPIError(APIError):
    """An API refused a request in a way no retry and no other episode escapes: the key is refused
    (401) or may not use the model (403), the model does not exist (404), or the request can never
    be served (400, e.g. over the context window). The run stops at once, keeping what is stored.
    ``model`` is the refused model; ``key_source`` where its key comes from (an environment
    variable's name, never its value)."""

    def __init__(self, message: str, *, model: str | None = None, key_source: str | None = None,
                 attempts: int | None = None):
        super().__init__(message, attempts=attempts)
        self.model, self.key_source = model, key_source


class JudgeError(APIError):
    """The judge's answer could not be validated after the allowed number of re-asks."""
