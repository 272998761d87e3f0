"""Positive choice: best by goal then relationship, the keep rule, rejected candidates."""
from sdpo.pairs.config import KeepRule
from sdpo.pairs.sample import beats, candidate_problem, continuation, decide, sample_seed

from .pairs_episodes import branch, episode

TEXTS = ["Hi Ben, want my bike?", "Maybe. How much?", "200 dollars, final.", "Too much, bye.", "Fine, 150?", "No."]


def negative():
    return episode(TEXTS, goals=(4, 5), relationships=(1, 0))


def test_best_by_goal_then_relationship_first_of_ties_wins():
    neg = negative()
    cands = [branch(neg, 2, ["120 and a helmet?", "Deal."], goals=(6, 5), relationships=(1, 0), episode_id="a"),
             branch(neg, 2, ["130?", "OK."], goals=(7, 5), relationships=(0, 0), episode_id="b"),
             branch(neg, 2, ["125?", "OK!"], goals=(7, 5), relationships=(2, 0), episode_id="c"),
             branch(neg, 2, ["126?", "OK!"], goals=(7, 5), relationships=(2, 0), episode_id="d")]
    entry = decide(neg, 0, 2, cands)
    assert entry["status"] == "kept" and entry["positive"] == "c"
    assert [c["episode_id"] for c in entry["candidates"]] == ["a", "b", "c", "d"]
    assert entry["candidates"][1]["scores"]["goal"] == 7.0 and entry["negative_scores"]["goal"] == 4.0


def test_authors_keep_rule_higher_goal_or_equal_goal_and_higher_relationship():
    neg = negative()
    same_goal_better_rel = branch(neg, 2, ["x", "y"], goals=(4, 0), relationships=(2, 0), episode_id="p")
    same_both = branch(neg, 2, ["x", "y"], goals=(4, 9), relationships=(1, 0), episode_id="q")
    lower_goal = branch(neg, 2, ["x", "y"], goals=(3, 9), relationships=(5, 5), episode_id="r")
    assert beats(same_goal_better_rel, neg, 0, KeepRule.authors)
    assert not beats(same_both, neg, 0, KeepRule.authors) and not beats(lower_goal, neg, 0, KeepRule.authors)
    entry = decide(neg, 0, 2, [same_both, lower_goal], keep=KeepRule.authors)
    assert entry["status"] == "dropped" and entry["reason"] == "not_better" and entry["best"] == "q"
    assert entry["keep"] == "authors"


def test_paper_keep_rule_is_the_default_goal_or_relationship():
    neg = negative()   # goal 4, relationship 1
    lower_goal_better_rel = branch(neg, 2, ["x", "y"], goals=(3, 9), relationships=(5, 5), episode_id="r")
    higher_goal_worse_rel = branch(neg, 2, ["x", "y"], goals=(6, 0), relationships=(-3, 0), episode_id="g")
    same_both = branch(neg, 2, ["x", "y"], goals=(4, 9), relationships=(1, 0), episode_id="q")
    assert beats(lower_goal_better_rel, neg, 0) and beats(higher_goal_worse_rel, neg, 0)
    assert not beats(same_both, neg, 0) and not beats(lower_goal_better_rel, neg, 0, KeepRule.authors)
    # The best is chosen by goal first (q, goal 4), and only the best is compared with the negative.
    entry = decide(neg, 0, 2, [lower_goal_better_rel, same_both])
    assert entry["status"] == "dropped" and entry["best"] == "q" and entry["keep"] == "paper"
    entry = decide(neg, 0, 2, [lower_goal_better_rel])
    assert entry["status"] == "kept" and entry["positive"] == "r"
    assert decide(neg, 0, 2, [lower_goal_better_rel], keep=KeepRule.authors)["status"] == "dropped"


def test_candidates_repeating_the_error_turn_or_unjudged_are_rejected():
    neg = negative()
    repeat = branch(neg, 2, ["200 dollars, final.  ", "ok"], goals=(9, 9), episode_id="same")
    unjudged = branch(neg, 2, ["150?", "ok"], goals=(9, 9), episode_id="nj", evaluated=False)
    assert candidate_problem(neg, repeat, 0, 2) == "same_error_turn"
    assert candidate_problem(neg, unjudged, 0, 2) == "judge_failed"
    entry = decide(neg, 0, 2, [repeat, unjudged])
    assert entry["status"] == "dropped" and entry["reason"] == "no_valid_candidate"
    assert [c["problem"] for c in entry["candidates"]] == ["same_error_turn", "judge_failed"]
    # From the start (ETO/DMPO) the first turn may coincide.
    assert candidate_problem(neg, branch(neg, 0, TEXTS, goals=(9, 9), episode_id="s"), 0, 0,
                             compare_first_turn=False) is None


def test_continuation_checks_the_shared_history():
    neg = negative()
    cand = branch(neg, 2, ["150?", "ok"], goals=(9, 9), episode_id="c")
    assert [t.argument for t in continuation(cand, 2, neg.turns[:2])] == ["150?", "ok"]
    other = episode(["Hello", "Maybe. How much?", "150?"], episode_id="o")
    assert candidate_problem(neg, other, 0, 2) == "history_mismatch"


def test_sample_seed_is_stable_and_depends_on_the_key():
    assert sample_seed(11, "k/1") == sample_seed(11, "k/1") != sample_seed(11, "k/2")
