"""The conversation formatter: messages from an agent's side, action parsing, context fitting,
and rollout-vs-training token identity with the embedded tokenizer."""
import json

import pytest

from agents.formatter import (
    OMITTED_NOTE,
    ConversationFormat,
    ConversationTokenizer,
    agent_messages,
    agent_messages_with_turns,
    fit_messages,
    parse_action,
)
from sotopia_env.episode import Turn
from sotopia_env.errors import DataError
from sotopia_env.profiles import Relationship
from sotopia_env.render import action_json as render_action
from tests.factories import RENT, make_task, make_turns


def test_roles_from_each_side():
    task = make_task(**RENT)
    turns = make_turns(task, 4)
    mine = agent_messages(task, 0, turns)
    assert [m["role"] for m in mine] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert mine[1]["content"].endswith("You speak first.")
    assert json.loads(mine[2]["content"]) == {"action_type": "speak", "argument": turns[0].argument}
    theirs = agent_messages(task, 1, turns)
    assert [m["role"] for m in theirs] == ["system", "user", "assistant", "user", "assistant"]
    assert theirs[1]["content"].endswith(render_action("speak", turns[0].argument))
    # Each side sees only its own goal and secret.
    assert "Get a one-week delay" in mine[0]["content"] and "keep a good tenant" not in mine[0]["content"]
    assert "Owes rent" in mine[0]["content"] and "Selling the shop" not in mine[0]["content"]


def test_none_turns_skipped_and_same_side_merged():
    task = make_task(**RENT)
    turns = make_turns(task, 2)
    turns.insert(1, Turn(turn=1, agent_index=1, speaker="Leo Park", action_type="none"))
    turns.append(Turn(turn=3, agent_index=1, speaker="Leo Park", action_type="action", argument="nods"))
    messages, index = agent_messages_with_turns(task, 0, turns)
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert index == [[], [], [0], [2, 3]]
    assert messages[3]["content"].count("\n") == 1


def test_parse_action_json_and_fallbacks():
    assert parse_action('{"action_type": "speak", "argument": "Hello"}') == ("speak", "Hello", False)
    assert parse_action('Sure! {"action_type": "leave", "argument": ""} bye') == ("leave", "", False)
    assert parse_action("Hello there") == ("speak", "Hello there", True)
    assert parse_action('{"action_type": "dance", "argument": "x"}')[2] is True
    assert parse_action("   ") == ("none", "", True)
    text = render_action("speak", 'She said "hi" and left ü')
    assert parse_action(text) == ("speak", 'She said "hi" and left ü', False)


def test_fit_messages_drops_oldest_whole_turns():
    task = make_task(**RENT)
    turns = make_turns(task, 6)
    def count(msgs):
        return sum(len(m["content"]) for m in msgs)

    full = count(agent_messages(task, 0, turns))
    messages, omitted = fit_messages(task, 0, turns, count, full)
    assert omitted == 0 and messages == agent_messages(task, 0, turns)
    messages, omitted = fit_messages(task, 0, turns, count, full - 10)
    assert omitted >= 1 and count(messages) <= full - 10
    assert messages == agent_messages(task, 0, turns[omitted:], omitted=omitted)
    # the fewest turns were dropped: one fewer would not fit
    assert count(agent_messages(task, 0, turns[omitted - 1:], omitted=omitted - 1)) > full - 10
    assert OMITTED_NOTE in messages[1]["content"] and messages[0]["role"] == "system"
    # the newest partner turn (what the agent answers) survives a tight budget
    tight, omitted = fit_messages(task, 0, turns[:5], count, count(agent_messages(task, 0, [], omitted=1)) + 60)
    assert turns[4].argument in tight[-1]["content"] or omitted == 5
    with pytest.raises(DataError, match="context budget"):
        fit_messages(task, 0, turns, count, 50)


@pytest.mark.parametrize("system_message", [True, False])
def test_rollout_prompts_are_training_prefixes(embedded_tokenizer, system_message):
    """For every turn the agent took, the prompt it generated from is an exact token prefix of
    the session the trainer encodes, and the target span decodes to the action it produced."""
    task = make_task(**RENT)
    fmt = ConversationFormat(system_message=system_message)
    ct = ConversationTokenizer(embedded_tokenizer)
    turns = make_turns(task, 6)
    for seat in (0, 1):
        session = agent_messages(task, seat, turns, fmt=fmt)
        encoded = ct.encode_session(session)
        own = [i for i, t in enumerate(turns) if t.agent_index == seat]
        assert len(encoded.assistant_spans) == len(own)
        for k, i in enumerate(own):
            prompt = ct.prompt_ids(agent_messages(task, seat, turns[:i], fmt=fmt))
            start, end = encoded.assistant_spans[k]
            assert encoded.input_ids[:start] == prompt
            target = embedded_tokenizer.decode(encoded.input_ids[start:end])
            # the action's canonical JSON plus the end-of-turn token the policy stops at
            assert target == render_action("speak", turns[i].argument) + "<|im_end|>\n"
        # byte identity: the template's own rendering of the whole session tokenizes to the same text
        text = embedded_tokenizer.apply_chat_template(session, tokenize=False)
        assert embedded_tokenizer.decode(encoded.input_ids) == text


def test_strangers_see_both_names_but_not_the_partners_profile():
    """As in SOTOPIA and the env's observation: names are always shown; what else of the partner
    an agent sees follows the relationship (strangers: nothing, so no occupation and no secret)."""
    from agents.formatter import system_text as background

    strangers = background(make_task(**RENT, relationship=Relationship.stranger), 0)
    assert "Participants: Mia Chen and Leo Park" in strangers
    assert "Leo Park's background: Unknown" in strangers and "Selling the shop" not in strangers
    assert "Owes rent" in strangers      # one's own secret is part of one's own background
    friends = background(make_task(**RENT, relationship=Relationship.friend), 0)
    assert "Leo Park's background: Leo Park" in friends and "Selling the shop" not in friends


def test_parse_action_salvages_a_reply_cut_by_the_budget():
    assert parse_action('{"action_type": "speak", "argument": "Could I pay on Fri') == ("speak", "Could I pay on Fri", True)
    assert parse_action('{"action_type": "action", "argument": "hands over the \\"key') == ("action", 'hands over the "key', True)
    assert parse_action('{"action_type": "speak", "argument": "caf\\u00') == ("speak", "caf", True)
    assert parse_action('{"action_type": "sing", "argument": "la la') == ("speak", '{"action_type": "sing", "argument": "la la', True)
