"""A stand-in for an API model (GPT-4o) that answers every request this package sends, offline.

``stand_in_answer(body)`` reads an OpenAI chat request and returns a valid, deterministic answer
for whichever question it carries: a turn's action (either prompt style), an episode's
evaluation (our rubric's ``agent_1_evaluation`` shape or SOTOPIA's ``evaluations`` shape), the
error turn (``{"index": ...}``) or the segment (``{"start_index": ..., "end_index": ...}``) of
``sdpo.pairs``. Scores come from a checksum of the request, so they differ between episodes
and repeat between runs. It plays no part in any result: it lets a paper-scale command run end
to end without a key or network, to check a configuration before paying for it::

    python -m agents.stand_in --port 8000 &
    OPENAI_API_BASE=http://127.0.0.1:8000/v1 OPENAI_API_KEY=none \\
        python -m benchmarks.sotopia partner=gpt-4o judge=gpt-4o limit=2

(LiteLLM sends ``gpt-4o`` and ``openai/<name>`` to ``$OPENAI_API_BASE``.) The README's tests run
its GPT-4o commands this way.
"""
from __future__ import annotations

import argparse
import json
import re
import time
import zlib

from sotopia_env.evaluation import DIMENSION_RANGES, DIMENSIONS

from .local_server import ScriptedOpenAIServer

_CHOICES = re.compile(r"numbers ((?:\d+, )*\d+)\.")
_SEGMENT_START = re.compile(r'"start_index": (\d+)')


def _checksum(text: str, *salt) -> int:
    return zlib.crc32("|".join([text, *map(str, salt)]).encode())


def _scores(text: str, agent: int) -> dict:
    out = {}
    for j, dim in enumerate(DIMENSIONS):
        low, high = DIMENSION_RANGES[dim]
        out[dim] = ["The stand-in's score, not a judgement.", low + _checksum(text, agent, j) % (high - low + 1)]
    return out


def stand_in_answer(body: dict) -> str:
    """A valid answer to any request this package sends (see the module's docstring)."""
    messages = body.get("messages") or []
    text = "\n".join(str(m.get("content", "")) for m in messages)
    if '"agent_1_evaluation"' in text:  # our judge's rubric
        return json.dumps({f"agent_{a + 1}_evaluation": _scores(text, a) for a in range(2)})
    if '"evaluations"' in text:  # SOTOPIA's evaluator (its answer schema)
        return json.dumps({"evaluations": {f"agent_{a + 1}": _scores(text, a) for a in range(2)}})
    choices = _CHOICES.findall(text)
    start = _SEGMENT_START.findall(text)
    if '"end_index"' in text and start and choices:  # the segment: from the first difference to one own turn
        return json.dumps({"start_index": int(start[-1]), "end_index": int(choices[-1].split(", ")[0]),
                           "reason": "The stand-in's choice."})
    if '{"index"' in text and choices:  # the error turn: one of the agent's own messages
        options = choices[-1].split(", ")
        return json.dumps({"index": int(options[_checksum(text) % len(options)]), "reason": "The stand-in's choice."})
    turn = sum(m.get("role") == "assistant" for m in messages)
    return json.dumps({"action_type": "speak", "argument": f"Let us talk it over (stand-in, turn {turn + 1})."})


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m agents.stand_in", description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8000, help="port on 127.0.0.1 (0: any free port)")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds to wait before each answer")
    args = parser.parse_args(argv)
    server = ScriptedOpenAIServer(stand_in_answer, delay=args.delay, port=args.port).start()
    print(f"stand-in model serving on {server.base_url} (Ctrl-C stops it)", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    from sotopia_env.cli import main_guard

    main_guard(main)
