"""AURAC, the risk–coverage curve and the token-F1 labelling, against plain loops."""

from __future__ import annotations

import numpy as np
import pytest

from isograd.evaluate import metrics as M
from isograd.qa.grading import F1_CORRECT
from isograd.qa.similarity import best_token_f1


def _kept_error(y, s, k):
    order = np.argsort(s, kind="stable")  # most confident (lowest uncertainty) first
    return y[order[:k]].mean()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_aurac_and_risk_coverage_by_loops(seed):
    rng = np.random.default_rng(seed)
    n = 37
    y = (rng.random(n) < 0.4).astype(int)
    s = rng.normal(size=n) + y  # continuous: no ties
    cov, risk = M.risk_coverage(y, s)
    ref = np.array([_kept_error(y, s, k) for k in range(1, n + 1)])
    np.testing.assert_allclose(cov, np.arange(1, n + 1) / n)
    np.testing.assert_allclose(risk, ref, rtol=0, atol=1e-12)
    acc = np.mean([1 - _kept_error(y, s, k) for k in range(1, n + 1)])
    assert M.aurac(y, s) == pytest.approx(acc, abs=1e-12)
    assert M.aurac(y, s) == pytest.approx(1 - M.aurc(y, s), abs=1e-12)
    assert risk.mean() == pytest.approx(M.aurc(y, s), abs=1e-12)
    # rank metrics: a monotone transform of the score changes nothing
    assert M.aurac(y, np.exp(3 * s)) == pytest.approx(M.aurac(y, s), abs=1e-12)


def test_aurac_reference_points():
    y = np.array([0, 0, 1, 1, 0, 1])
    good, bad = y.astype(float), -y.astype(float)
    assert M.aurac(y, good) > M.aurac(y, np.zeros(6)) > M.aurac(y, bad)
    assert M.aurac(y, np.zeros(6)) == pytest.approx(1 - y.mean())  # all tied: the base rate
    assert M.risk_coverage(y, good)[1][-1] == pytest.approx(y.mean())  # full coverage


def test_best_token_f1_labelling():
    aliases = ["Paris", "City of Light"]
    assert best_token_f1("Paris", aliases) == 1.0
    assert best_token_f1("It is Paris, France.", aliases) == pytest.approx(2 * (1 / 4) / (1 + 1 / 4))
    assert best_token_f1("the city of lights", aliases) == pytest.approx(2 / 3)
    assert best_token_f1("Lyon", aliases) == 0.0 and best_token_f1("Paris", []) == 0.0
    # a long sentence that contains the alias can miss the cut where containment matches
    long = "The capital of France is a city called Paris"
    assert best_token_f1(long, aliases) < F1_CORRECT


def test_f1_label_of_questions():
    from isograd.qa.datasets import Question
    from isograd.qa.grading import f1_label

    q = Question(id="q", dataset="triviaqa", question="Capital of France?",
                 answers=("Paris", "City of Light"))
    assert f1_label(q, "Paris") == {"grade_f1": 1.0, "correct_f1": True}
    assert f1_label(q, "The capital of France is a city called Paris")["correct_f1"] is False
    mc = Question(id="m", dataset="truthfulqa-mc1", question="?", answers=("a",),
                  options=("a", "b"), label=0)
    assert f1_label(mc, "a") == {} and f1_label(mc, 0) == {}
