"""benchmarks.fit_speed: TRL gets the same single-turn pairs that sdpo.fit trains on."""
import pytest

from agents.formatter import ConversationTokenizer
from benchmarks.fit_speed import make_pairs, pair_token_count, trl_rows, trl_token_count
from sdpo.pairs_schema import read_pairs
from sdpo.tokenize import NO_TURN, tokenize_pairs


def test_trl_rows_are_our_tokens(tmp_path, embedded_tokenizer):
    path = tmp_path / "single.jsonl"
    make_pairs(path, 3, history_turns=2, segment=1, reply_words=20, kind="dpo", history_words=6)
    tokenized, _ = tokenize_pairs(ConversationTokenizer(embedded_tokenizer), read_pairs(path))
    rows = trl_rows(path, embedded_tokenizer)
    tok = embedded_tokenizer

    def ids(text):
        return tok(text, add_special_tokens=False)["input_ids"]

    expected = 0
    for tp, row in zip(tokenized, rows):
        prompt = ids(row["prompt"])
        for side, reply in ((tp.chosen, row["chosen"]), (tp.rejected, row["rejected"])):
            # TRL's prompt is exactly our context before the trained turn, its reply our target turn
            assert side.input_ids[:len(prompt)] == prompt
            targets = [i for i, k in zip(side.input_ids, side.turn_index) if k != NO_TURN]
            assert tok.decode(targets) == reply + "<|im_end|>\n"
        assert tp.prefix_len == len(prompt)
        expected += 2 * len(prompt) + len(ids(row["chosen"])) + len(ids(row["rejected"])) + 2
    assert trl_token_count(path, tok) == expected / len(rows)
    # both sides in full: TRL's count plus the newline after each side's <|im_end|>
    assert pair_token_count(path, tok) == trl_token_count(path, tok) + 2


def test_trl_rows_refuse_multi_turn_sides(tmp_path, embedded_tokenizer):
    path = tmp_path / "multi.jsonl"
    make_pairs(path, 2, history_turns=2, segment=2, reply_words=10, kind="sdpo", history_words=6)
    with pytest.raises(ValueError, match="must be one turn of agent 0"):
        trl_rows(path, embedded_tokenizer)


def test_history_must_end_before_the_trained_agent(tmp_path):
    with pytest.raises(ValueError, match="history_turns=1: must be even and >= 0"):
        make_pairs(tmp_path / "p.jsonl", 1, history_turns=1, segment=1, reply_words=10, kind="dpo")
