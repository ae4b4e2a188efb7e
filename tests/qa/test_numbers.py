"""Numbers match whether written as digits or words."""

from __future__ import annotations

import pytest

from isograd.qa.datasets import Question
from isograd.qa.grading import alias_match, grade
from isograd.qa.numbers import numbers_to_digits
from isograd.qa.similarity import token_f1, tokens


@pytest.mark.parametrize("words,digits", [
    ("a spider has eight legs", "spider has 8 legs"),
    ("twenty two", "22"),
    ("twenty-two", "22"),
    ("one hundred and five", "105"),
    ("a hundred years", "100 years"),
    ("two thousand and twelve", "2012"),
    ("three million people", "3000000 people"),
    ("nineteen eighty four", "19 84"),  # a year read as two numbers, as it is said
    ("two three", "2 3"),
    ("seventy", "70"),
    ("bread and butter", "bread and butter"),
    ("the eighth", "eighth"),  # ordinals are left alone
])
def test_number_words_become_digits(words, digits):
    assert " ".join(tokens(words)) == digits


def test_runs_end_at_other_words():
    assert numbers_to_digits(["two", "cats", "and", "three", "dogs"]) == ["2", "cats", "and", "3", "dogs"]
    assert numbers_to_digits(["hundred", "and", "cats"]) == ["100", "and", "cats"]
    assert numbers_to_digits([]) == []


def test_digits_match_words_both_ways():
    q = Question("s", "triviaqa", "How many legs does a spider have?", ("eight",))
    assert grade(q, "A spider has 8 legs.").correct
    q8 = Question("s", "triviaqa", "How many legs does a spider have?", ("8",))
    assert grade(q8, "It has eight legs.").correct
    assert not grade(q8, "It has six legs.").correct
    assert alias_match("Twenty-two", ["22"], mode="exact") == (True, "22")
    assert token_f1("eight legs", "8 legs") == 1.0
    # a number in the question is still no evidence for containment
    q2 = Question("t", "triviaqa", "What is three plus five?", ("eight", "3"))
    assert not grade(q2, "It is 3.").correct and grade(q2, "It is 8.").correct
