"""Negatives: the paper's rule, the authors' rule, the per-scenario cap, seats and unjudged sessions."""
from sdpo.pairs.config import NegativeRule, NegativesConfig
from sdpo.pairs.negatives import Negative, is_negative, select_negatives
from tests.factories import make_task

from .pairs_episodes import episode

TEXTS = ["hi", "hello", "price?", "90"]


def test_paper_rule_is_goal_below_seven_and_authors_rule_adds_relationship():
    paper = NegativesConfig()
    assert is_negative(6.9, 5, paper) and not is_negative(7.0, -5, paper)
    authors = NegativesConfig(rule=NegativeRule.authors)
    assert is_negative(7.0, 5, authors)          # goal <= 7
    assert is_negative(9.0, 2.0, authors)        # relationship <= 2
    assert not is_negative(8.0, 3.0, authors)


def test_self_chat_gives_one_negative_per_low_seat_partner_only_the_agent_seat():
    records = [
        episode(TEXTS, goals=(3, 4), episode_id="self1"),                        # both seats low
        episode(TEXTS, goals=(8, 2), episode_id="vs1", interlocutor="partner", seats=(0,)),  # seat 1 is the partner
        episode(TEXTS, goals=(2, 9), episode_id="vs2", interlocutor="partner", seats=(1,)),  # agent seat high
        episode(TEXTS, goals=(1, 1), episode_id="bad", evaluated=False),
    ]
    negatives, counts = select_negatives(records, NegativesConfig())
    assert [n.key for n in negatives] == ["self1:0", "self1:1"]
    assert counts == {"sessions": 4, "unevaluated": 1, "seats": 4, "negatives": 2, "capped": 0}
    assert Negative.from_dict(negatives[1].to_dict()) == negatives[1]


def test_cap_per_scenario_and_side():
    records = [episode(TEXTS, goals=(3, 3), episode_id=f"e{i}") for i in range(3)]
    records.append(episode(TEXTS, goals=(3, 9), episode_id="other", task=make_task("t2", scenario_pk="sc-other")))
    negatives, counts = select_negatives(records, NegativesConfig(max_per_scenario_side=2))
    assert [n.key for n in negatives] == ["e0:0", "e0:1", "e1:0", "e1:1", "other:0"]
    assert counts["capped"] == 2


def test_total_cap_keeps_the_first_negatives_in_store_order():
    records = [episode(TEXTS, goals=(3, 3), episode_id=f"e{i}") for i in range(3)]
    negatives, counts = select_negatives(records, NegativesConfig(max_negatives=3))
    assert [n.key for n in negatives] == ["e0:0", "e0:1", "e1:0"] and counts["capped"] == 3
