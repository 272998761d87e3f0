"""What every ``python -m`` entry point shares: ``--help`` written from the structured config's own
field docstrings, hydra's overrides, and our errors as one line with exit code 2.

    python -m benchmarks.sotopia --help
    python -m sdpo.fit loss=dpo --traceback     # the full stack instead of the one-line error

Help is read from the config dataclass itself (each field's docstring, its type, default and, for
an Enum or a bool, the allowed values), so the help and the code never disagree. The argparse
commands (``benchmarks.compare`` ...) get the same error handling from ``main_guard``.
"""
from __future__ import annotations

import ast
import dataclasses
import enum
import inspect
import os
import sys
import textwrap
import traceback
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .errors import SotopiaError
from .redaction import install_log_redaction, redact

TRACEBACK_FLAG = "--traceback"
TRACEBACK_ENV = "SOTOPIA_SDPO_TRACEBACK"
"""Set to 1 (or pass --traceback) to get the full stack of an error instead of its one line."""


def field_docs(cls: type) -> dict[str, str]:
    """The docstring under each field of a dataclass (``name: type = default`` then ``\"\"\"doc\"\"\"``)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError):
            continue
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for node, after in zip(body, body[1:] + [None]):
            if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(after, ast.Expr)
                    and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str)):
                docs[node.target.id] = " ".join(after.value.value.split())
    return docs


def _unwrap(tp: Any) -> tuple[Any, bool]:
    """(the type inside Optional[...], whether None is allowed)."""
    args = typing.get_args(tp)
    if type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return (rest[0] if len(rest) == 1 else tp), True
    return tp, False


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return "(required)"


def _show(value: Any) -> str:
    if isinstance(value, enum.Enum):
        return str(value.value)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "[" + ",".join(_show(v) for v in value) + "]"
    return str(value)


def options(cls: type, prefix: str = "") -> list[tuple[str, str, str, str]]:
    """``(name, default, allowed, doc)`` for every option of a config dataclass, nested ones as
    ``group.name``."""
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    rows = []
    for f in dataclasses.fields(cls):
        tp, nullable = _unwrap(hints.get(f.name, Any))
        name = prefix + f.name
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            rows += options(tp, name + ".")
            continue
        if isinstance(tp, type) and issubclass(tp, enum.Enum):
            allowed = " | ".join(str(m.value) for m in tp)
        elif tp is bool:
            allowed = "true | false"
        else:
            allowed = getattr(tp, "__name__", str(tp).replace("typing.", ""))
        if nullable:
            allowed += " | null"
        rows.append((name, _show(_default(f)), allowed, docs.get(f.name, "")))
    return rows


def help_text(cls: type, prog: str, summary: str, extra: str = "") -> str:
    """The ``--help`` page: usage, what the command does, then every option."""
    lines = [f"usage: python -m {prog} [option=value ...] [{TRACEBACK_FLAG}]", "", summary.strip(), "",
             "Options (hydra overrides, option=value; defaults shown):"]
    for name, default, allowed, doc in options(cls):
        lines.append(f"  {name}={default}    [{allowed}]")
        for chunk in textwrap.wrap(doc, 96) or ["(no description)"]:
            lines.append(f"      {chunk}")
    if extra:
        lines += ["", extra.strip()]
    lines += ["", f"{TRACEBACK_FLAG} (or {TRACEBACK_ENV}=1): print the full stack of an error instead of one line."]
    return "\n".join(lines)


def fail(error: BaseException) -> None:
    """Our own errors as one line and exit code 2 (the stack with --traceback), keys masked."""
    if os.environ.get(TRACEBACK_ENV):
        crash(error)
    print(redact(f"error: {error}"), file=sys.stderr)
    sys.exit(2)


def crash(error: BaseException) -> None:
    """The full stack of ``error`` (its causes included: a provider's exception may quote the key),
    keys masked, and exit code 2."""
    print(redact("".join(traceback.format_exception(type(error), error, error.__traceback__))).rstrip(),
          file=sys.stderr)
    sys.exit(2)


def main_guard(main: Callable[[], Any]) -> None:
    """Run an argparse entry point's ``main()`` as every ``python -m`` command runs: our own errors
    (a SotopiaError: a missing file, a model that cannot be loaded) as one line and exit code 2, any
    other error's stack with keys masked, also exit 2; ``--traceback`` anywhere on the command line
    (taken out before argparse sees it) or SOTOPIA_SDPO_TRACEBACK=1 prints our errors' stack too.

        if __name__ == "__main__":
            cli.main_guard(main)
    """
    install_log_redaction()
    if TRACEBACK_FLAG in sys.argv[1:]:
        os.environ[TRACEBACK_ENV] = "1"
        sys.argv = [sys.argv[0], *[a for a in sys.argv[1:] if a != TRACEBACK_FLAG]]
    try:
        main()
    except SotopiaError as e:
        fail(e)
    except Exception as e:  # noqa: BLE001 - not ours: the stack, but never a key in it
        crash(e)


def run(prog: str, schema: type, task: Callable[[Any], None], *, summary: str, config_name: str,
        config_path: str | os.PathLike | None = None, hydra_defaults: Sequence[str] = (), extra_help: str = "") -> None:
    """Run ``task(config)`` as the command ``python -m prog``: ``--help`` from ``schema``, hydra
    overrides (``hydra_defaults`` are added unless the user gives them), our errors in one line."""
    import hydra
    from hydra.core.config_store import ConfigStore
    from omegaconf import DictConfig, OmegaConf

    install_log_redaction()
    args = sys.argv[1:]
    if "--help" in args or "-h" in args:
        print(help_text(schema, prog, summary, extra_help))
        sys.exit(0)
    if TRACEBACK_FLAG in args:
        os.environ[TRACEBACK_ENV] = "1"
        args.remove(TRACEBACK_FLAG)
    given = " ".join(args)
    sys.argv = [sys.argv[0], *args, *[d for d in hydra_defaults if d.split("=")[0] not in given]]
    if config_path is None:
        ConfigStore.instance().store(name=config_name, node=schema)

    @hydra.main(version_base=None, config_path=None if config_path is None else str(Path(config_path).resolve()),
                config_name=config_name)
    def _main(dict_cfg: DictConfig) -> None:
        try:
            task(OmegaConf.to_object(dict_cfg))
        except SotopiaError as e:
            fail(e)
        except Exception as e:  # noqa: BLE001 - not ours: the stack, but never a key in it
            crash(e)

    try:
        _main()
    except SystemExit as e:
        # hydra reports a malformed override or a value its schema refuses (an unknown option,
        # "tasks=bogus" with the allowed values) in a few lines and exits 1: bad input, so 2.
        raise SystemExit(2 if e.code == 1 else e.code) from None
