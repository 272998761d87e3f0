"""sdpo.tokenize: segment labels, per-token turn index, whole-turn truncation of the oldest history."""
import pytest

from agents.formatter import ConversationTokenizer, agent_messages
from sdpo.tokenize import NO_TURN, tokenize_pair, tokenize_pairs
from sotopia_env.render import action_json as render_action
from tests.pair_fixtures import make_pair, turn


@pytest.fixture(scope="module")
def conv(embedded_tokenizer):
    return ConversationTokenizer(embedded_tokenizer)


def _turn_text(conv, side, t):
    return conv.tokenizer.decode([i for i, k in zip(side.input_ids, side.turn_index) if k == t])


@pytest.mark.parametrize("agent_index", [0, 1])
def test_labels_only_on_segment_turns_of_trained_agent(conv, agent_index):
    pair = make_pair(n_history=3, seg=2, agent_index=agent_index)
    tp = tokenize_pair(conv, pair)
    for name in ("chosen", "rejected"):
        side, turns = getattr(tp, name), getattr(pair, name)
        own = [t for t in turns if t.agent_index == agent_index]
        assert side.n_turns == 2
        for k, t in enumerate(own):
            # each target turn is exactly the action JSON plus the end-of-turn tokens
            assert _turn_text(conv, side, k) == render_action(t.action_type, t.argument) + "<|im_end|>\n"
        partner = [t for t in turns if t.agent_index != agent_index]
        targets = conv.tokenizer.decode([i for i, k in zip(side.input_ids, side.turn_index) if k != NO_TURN])
        assert all(t.argument not in targets for t in partner + pair.history)


def test_tokens_are_the_rollout_prompt(conv):
    """The context before the first target equals what the policy was prompted with at that turn."""
    pair = make_pair(n_history=4, seg=1)
    tp = tokenize_pair(conv, pair)
    prompt = conv.prompt_ids(agent_messages(pair.task, 0, pair.history))
    assert tp.chosen.input_ids[:tp.chosen.first_target] == prompt


def test_merged_message_splits_turns(conv):
    """Partner 'none' turns merge consecutive agent turns into one assistant message; the turn
    index still tells them apart."""
    pair = make_pair(n_history=2, seg=3)
    pair.chosen = [turn(2, 0, "first"), turn(3, 1, "", "none"), turn(4, 0, "second"), turn(5, 1, "ok"),
                   turn(6, 0, "third")]
    tp = tokenize_pair(conv, pair)
    side = tp.chosen
    assert _turn_text(conv, side, 0) == render_action("speak", "first") + "\n"
    assert _turn_text(conv, side, 1) == render_action("speak", "second") + "<|im_end|>\n"
    assert _turn_text(conv, side, 2) == render_action("speak", "third") + "<|im_end|>\n"


def test_prefix_is_shared_and_target_free(conv):
    tp = tokenize_pair(conv, make_pair(n_history=4, seg=2))
    p = tp.prefix_len
    assert p > 100 and tp.chosen.input_ids[:p] == tp.rejected.input_ids[:p]
    assert p <= tp.chosen.first_target and p <= tp.rejected.first_target
    assert tp.n_tokens == len(tp.chosen.input_ids) + len(tp.rejected.input_ids) - p


def test_truncation_drops_oldest_history_turns_only(conv):
    pair = make_pair(n_history=8, seg=2, words=40)
    full = tokenize_pair(conv, pair, max_length=100_000)
    longest = max(len(full.chosen.input_ids), len(full.rejected.input_ids))
    cut = tokenize_pair(conv, pair, max_length=longest - 60)
    assert cut.omitted >= 1
    for name in ("chosen", "rejected"):
        side, whole = getattr(cut, name), getattr(full, name)
        assert len(side.input_ids) <= longest - 60
        text = conv.tokenizer.decode(side.input_ids)
        assert "Scenario: Two neighbours" in text and "Earlier turns of the conversation are omitted" in text
        assert all(t.argument not in text for t in pair.history[:cut.omitted])
        assert all(t.argument in text for t in pair.history[cut.omitted:])
        for k in range(2):   # every segment turn survives, token for token
            assert _turn_text(conv, side, k) == _turn_text(conv, whole, k)
    assert cut.chosen.input_ids[:cut.prefix_len] == cut.rejected.input_ids[:cut.prefix_len]


def test_unfittable_pairs_are_skipped_and_counted(conv):
    pairs = [make_pair("fits", n_history=2), make_pair("huge", n_history=2, words=400), make_pair("long", n_history=10,
                                                                                                  words=30)]
    out, stats = tokenize_pairs(conv, pairs, max_length=700)
    assert [p.pair_id for p in out] == ["fits", "long"]
    assert (stats.kept, stats.truncated, stats.skipped, stats.skipped_ids) == (2, 1, 1, ["huge"])


def test_sft_pair_has_one_side(conv):
    tp = tokenize_pair(conv, make_pair(kind="sft", n_history=0, seg=3))
    assert tp.rejected is None and tp.prefix_len == 0 and tp.chosen.n_turns == 3
    assert sorted(set(tp.chosen.turn_index) - {NO_TURN}) == [0, 1, 2]
