"""sdpo.pairs.convert: the SDPO authors' training files -> pair records (segments recovered), pair
records -> TRL's conversational preference dataset (trained by TRL's DPOTrainer), round trips."""
import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest

from agents.formatter import agent_messages
from sdpo.pairs.authors_layout import authors_records, read_authors_file, write_authors_file
from sdpo.pairs.convert import main
from sdpo.pairs.trl_export import trl_record
from sdpo.pairs.write import write_pair_file
from sdpo.pairs_schema import read_pairs
from sotopia_env.errors import DataError
from sotopia_env.render import action_json
from tests.pair_fixtures import make_pair

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "sdpo_authors"
SDPO_FILE, SFT_FILE = FIXTURES / "sdpo_data.json", FIXTURES / "sft_data.json"


def _args(turns):
    return [(t.agent_index, t.action_type, t.argument) for t in turns]


def test_authors_sdpo_file_becomes_segment_pairs(tmp_path):
    first, second = read_authors_file(SDPO_FILE, "sdpo")
    # the agent speaks first: history is the two shared turns, the segment starts at the error turn
    assert first.agent_index == 0 and first.task.agent_names == ["Mia Chen", "Leo Park"]
    assert _args(first.history) == [(0, "speak", "Hi Leo, do you have a minute?"), (1, "speak", "Sure Mia, what's up?")]
    assert first.chosen[0].argument == "My oven broke, could I pay next Friday instead?"
    assert first.rejected[-1].action_type == "leave"
    assert first.segment == {"chosen": (1, 2), "rejected": (1, 2)}
    assert first.task.scenario.agent_goals[0].startswith("Get a one-week delay")
    assert first.task.profiles[0].secret == "She is about to close the bakery."
    assert first.provenance["score_difference"] == {"goal": 3, "relationship": 1}
    # the agent is seat 1 and speaks second: the partner's opening action is a history turn
    assert second.agent_index == 1 and second.history[0].agent_index == 0
    assert second.history[0].argument == "Good morning Leo."
    assert second.chosen[0].argument == 'Why do you need the "extra week"?'   # bare quotes in the authors' JSON
    assert second.segment == {"chosen": (1, 2), "rejected": (1, 2)}
    write_pair_file(tmp_path / "p.jsonl", [first, second])   # valid under the pair schema
    assert [p.pair_id for p in read_pairs(tmp_path / "p.jsonl")] == ["sdpo_data:0", "sdpo_data:1"]


def test_authors_file_as_dpo_eto_and_sft():
    dpo = read_authors_file(SDPO_FILE, "dpo")[0]
    assert dpo.segment == {"chosen": (1, 1), "rejected": (1, 1)}
    assert [t.agent_index for t in dpo.chosen] == [0] and [t.agent_index for t in dpo.rejected] == [0]
    eto = read_authors_file(SDPO_FILE, "eto")[1]
    assert eto.history == [] and eto.segment == {"chosen": (0, 2), "rejected": (0, 2)}
    assert eto.chosen[0].argument == "Good morning Leo."
    sft = read_authors_file(SFT_FILE, "sft")
    assert [s.rejected for s in sft] == [None, None] and [s.agent_index for s in sft] == [0, 1]
    assert sft[0].segment == {"chosen": (0, 2), "rejected": None} and len(sft[0].chosen) == 5


def _records():
    return json.loads(SDPO_FILE.read_text())


def _odd(r):
    return r[:3]


def _shifted(r):
    return [r[0], r[3], r[2], r[1]]


def _same(r):
    return [r[0], r[0]]


def _partner_first(r):
    r[1]["conversations"][2]["value"] = '{"action_type": "speak", "argument": "Not now."}'
    return r


def _not_an_action(r):
    r[1]["conversations"][3]["value"] = "I would rather pay later."
    return r


def _no_prompt(r):
    r[0]["conversations"][0]["value"] = "Hello there."
    return r


@pytest.mark.parametrize("edit, record, field, words", [
    (_odd, 2, None, "in twos"),
    (_shifted, 0, "conversations", "not one pair"),
    (_same, 0, "conversations", "same session"),
    (_partner_first, 0, "conversations", "partner"),
    (_not_an_action, 1, "conversations[3].value", "not a JSON action"),
    (_no_prompt, 0, "conversations[0].value", "Imagine you are"),
])
def test_unreadable_records_are_refused_naming_file_line_field(tmp_path, edit, record, field, words):
    path = tmp_path / "bad.json"
    write_authors_file(path, edit(_records()))
    lines = path.read_text().splitlines()
    starts = [i + 1 for i, text in enumerate(lines) if text == "    {"]   # where each record opens
    with pytest.raises(DataError) as e:
        read_authors_file(path, "sdpo")
    message = str(e.value)
    assert message.startswith(f"{path} line {starts[record]}") and words in message
    assert field is None or f"field {field!r}" in message


def test_command_line_refusal_is_one_line_and_writes_nothing(tmp_path):
    path = tmp_path / "bad.json"
    write_authors_file(path, _shifted(_records()))
    out = tmp_path / "pairs.jsonl"
    run = subprocess.run([sys.executable, "-m", "sdpo.pairs.convert", "from-authors", str(path), "--kind", "sdpo",
                          "--out", str(out)], capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 2 and not out.exists()
    assert run.stderr.count("\n") == 1 and run.stderr.startswith(f"error: {path} line 2: field 'conversations'")


def _carried(pair):
    """The fields the authors' layout carries."""
    seat = pair.agent_index
    return (pair.kind, seat, _args(pair.history), _args(pair.chosen), pair.rejected and _args(pair.rejected),
            pair.segment, pair.task.agent_names, pair.task.scenario.scenario, pair.task.scenario.agent_goals[seat])


@pytest.mark.parametrize("pair", [
    make_pair("s0", n_history=4, seg=2), make_pair("s1", n_history=3, seg=3, agent_index=1),
    make_pair("d0", kind="dpo", seg=1), make_pair("e0", kind="eto", n_history=0, seg=2),
    make_pair("f0", kind="sft", n_history=0, seg=2),
], ids=["sdpo", "sdpo-seat1", "dpo", "eto", "sft"])
def test_round_trip_ours_authors_ours(tmp_path, pair):
    pairs_path, authors_path, back_path = tmp_path / "p.jsonl", tmp_path / "a.json", tmp_path / "back.jsonl"
    write_pair_file(pairs_path, [pair])
    main(["to-authors", str(pairs_path), "--out", str(authors_path)])
    main(["from-authors", str(authors_path), "--kind", pair.kind, "--out", str(back_path)])
    back, = read_pairs(back_path)
    assert _carried(back) == _carried(pair)
    assert [(t.turn, t.speaker) for t in back.history + back.chosen] == [(t.turn, t.speaker)
                                                                          for t in pair.history + pair.chosen]
    if pair.rejected is not None:
        assert back.provenance["score_difference"] == {"goal": 5.0}


def test_export_to_authors_refuses_a_mixed_file():
    with pytest.raises(DataError, match="either SFT sessions or preference pairs"):
        authors_records([make_pair("a"), make_pair("b", kind="sft")])


def test_trl_example_is_the_shared_history_then_each_segment():
    pair = read_authors_file(SDPO_FILE, "sdpo")[1]
    example = trl_record(pair)
    assert example["prompt"][-1]["role"] == "user" and example["pair_id"] == "sdpo_data:1"
    full = agent_messages(pair.task, pair.agent_index, pair.history + pair.chosen, fmt=pair.format)
    assert example["prompt"] + example["chosen"] == full   # the one formatter's layout, agent = assistant
    assert len(example["prompt"]) == 3   # opening with the partner's action, agent's reply, partner's request
    assert [m["role"] for m in example["rejected"]] == ["assistant", "user", "assistant"]
    assert example["chosen"][0]["content"] == action_json("speak", 'Why do you need the "extra week"?')
    with pytest.raises(DataError, match="no rejected side"):
        trl_record(make_pair(kind="sft", n_history=0))
    sotopia_style = make_pair()
    sotopia_style.format.prompt_style = "sotopia"
    with pytest.raises(DataError, match="prompt style"):
        trl_record(sotopia_style, {"path": "p.jsonl", "line": 7})


@pytest.mark.slow
def test_trl_file_loads_with_datasets_and_trains_one_dpo_step(tmp_path, tiny_llama, embedded_tokenizer):
    from datasets import load_dataset
    from trl import DPOConfig, DPOTrainer

    pairs_path, trl_path = tmp_path / "p.jsonl", tmp_path / "trl.jsonl"
    write_pair_file(pairs_path, read_authors_file(SDPO_FILE, "sdpo") + [make_pair("d0", kind="dpo", seg=1)])
    main(["to-trl", str(pairs_path), "--out", str(trl_path)])
    dataset = load_dataset("json", data_files=str(trl_path), split="train")
    assert len(dataset) == 3 and {"prompt", "chosen", "rejected"} <= set(dataset.column_names)
    # One step on one example, kept short (the end of each sequence is kept): TRL's log-prob kernel is
    # slow on a CPU whatever the model's size.
    config = DPOConfig(output_dir=str(tmp_path / "out"), max_steps=1, per_device_train_batch_size=1, max_length=96,
                       truncation_mode="keep_end", learning_rate=1e-3, report_to="none", use_cpu=True,
                       save_strategy="no", logging_steps=1, bf16=False, gradient_checkpointing=False)
    trainer = DPOTrainer(model=tiny_llama, ref_model=copy.deepcopy(tiny_llama), args=config, train_dataset=dataset,
                         processing_class=copy.deepcopy(embedded_tokenizer))
    assert len(trainer.train_dataset) == 3   # every example tokenized, none dropped
    first = trainer.train_dataset[0]
    assert first["chosen_ids"] != first["rejected_ids"] and len(first["prompt_ids"]) > 100
    result = trainer.train()
    assert result.global_step == 1
    logged = trainer.state.log_history[0]
    assert logged["loss"] == pytest.approx(0.6931, abs=1e-3)   # policy == reference at the first step: ln 2
