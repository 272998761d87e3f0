"""The one task builder of the tests, and the few tasks the tests share, written in code (no
dependence on the built-in data unless a test asks for it).

``make_task()`` is a two-neighbours bicycle sale (Ana and Ben); every keyword replaces one part.
The presets are keyword sets for it: ``make_task(**RENT)`` is the tenant asking her landlord for a
delay (the agents' tests), ``make_task(**RENT_TALK)`` the rent talk with full profiles (the
environment's visibility tests).
"""
from __future__ import annotations

from collections.abc import Sequence

from sotopia_env.episode import Turn
from sotopia_env.profiles import Profile, Relationship, Scenario, Task

ANA = Profile(pk="p-ana", first_name="Ana", last_name="Reyes", age=34, occupation="nurse")
BEN = Profile(pk="p-ben", first_name="Ben", last_name="Okafor", age=29, occupation="teacher")


def make_task(pk: str = "t-bike", *, scenario_pk: str = "sc-bike", codename: str = "bike_sale",
              scenario: str = "Two neighbours discuss the sale of a used bicycle.",
              goals: Sequence[str] = ("Sell the bicycle for at least $120.", "Buy the bicycle for at most $100."),
              relationship: Relationship | int = Relationship.acquaintance,
              profiles: tuple[Profile, Profile] = (ANA, BEN), tags: Sequence[str] = (),
              tested_seat: int | None = None) -> Task:
    """A task: its pk, its scenario's parts, the two profiles, and the hard-subset marks
    (``tags=["hard"]``, ``tested_seat``)."""
    return Task(pk=pk, scenario=Scenario(pk=scenario_pk, codename=codename, scenario=scenario, agent_goals=list(goals),
                                         relationship=relationship, tags=list(tags)),
                profiles=profiles, tested_seat=tested_seat)


RENT = dict(
    pk="t-rent", scenario_pk="s", codename="rent",
    scenario="A tenant asks her landlord to delay the rent by a week.",
    goals=("Get a one-week delay on the rent.", "Be paid on time, but keep a good tenant."),
    profiles=(Profile(pk="a", first_name="Mia", last_name="Chen", age=31, occupation="baker", secret="Owes rent"),
              Profile(pk="b", first_name="Leo", last_name="Park", age=45, occupation="landlord",
                      secret="Selling the shop")),
)
"""A tenant (Mia, seat 0) asks her landlord (Leo, seat 1) to delay the rent; short profiles."""

RENT_TALK = dict(
    pk="t-rent", scenario_pk="s-rent", codename="rent_talk",
    scenario="A tenant and her landlord discuss the rent.",
    goals=("Keep the rent below 2000 <extra_info>you can pay 1900</extra_info>", "Raise the rent to 2400"),
    profiles=(Profile(pk="p-mia", first_name="Mia", last_name="Chen", age=31, occupation="pastry chef", gender="Woman",
                      gender_pronoun="she/her", public_info="Runs a small bakery.", big_five="High openness",
                      personality_and_values="Warm but stubborn about prices.", decision_making_style="Intuitive",
                      secret="She is about to close the bakery."),
              Profile(pk="p-leo", first_name="Leo", last_name="Park", age=45, occupation="landlord", gender="Man",
                      gender_pronoun="he/him", public_info="Owns the building.",
                      personality_and_values="Calculating.", secret="He already promised the shop to someone else.")),
)
"""The rent talk with every profile field filled (what each relationship level shows), an
inline ``<extra_info>`` hint in seat 0's goal."""


def make_turns(task: Task, n: int, first: int = 0) -> list[Turn]:
    """``n`` spoken turns of the rent conversation, alternating seats from ``first``."""
    lines = ["Hi Leo, do you have a minute?", "Sure Mia, what's up?", "Could I pay the rent next Friday?",
             "That is late. Why?", "My oven broke and I lost a week of sales.", "I see. Fine, but only once."]
    return [Turn(turn=i, agent_index=(first + i) % 2, speaker=task.profiles[(first + i) % 2].name,
                 action_type="speak", argument=lines[i % len(lines)]) for i in range(n)]
