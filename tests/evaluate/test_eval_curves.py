"""The risk–coverage and per-token profile figures are drawn from the rows they are given."""

from __future__ import annotations

import numpy as np
import pytest

from isograd.evaluate.curves import plot_risk_coverage, plot_token_profiles, profile_examples

pytest.importorskip("matplotlib")


def test_risk_coverage_plot_written(tmp_path):
    rng = np.random.default_rng(0)
    y = (rng.random(40) < 0.5).astype(int)
    s = {"a": rng.normal(size=40) + y, "b": np.where(np.arange(40) < 5, np.nan, rng.normal(size=40))}
    p = tmp_path / "rc.png"
    plot_risk_coverage(p, y, s, labels={"a": "score a"}, title="t")
    assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_risk_coverage_shows_alpha_and_the_chosen_threshold(tmp_path, monkeypatch):
    from isograd.evaluate import curves

    seen = {}
    real = curves.finish

    def spy(fig, ax, path, **kw):
        seen["labels"] = ax.get_legend_handles_labels()[1]
        seen["hlines"] = [ln.get_ydata()[0] for ln in ax.get_lines() if ln.get_linestyle() == ":"]
        real(fig, ax, path, **kw)

    monkeypatch.setattr(curves, "finish", spy)
    rng = np.random.default_rng(1)
    y = (rng.random(50) < 0.5).astype(int)
    plot_risk_coverage(tmp_path / "rc.png", y, {"d": rng.normal(size=50) + y}, alpha=0.3,
                       chosen={"detector": (0.42, 0.25)})
    assert "target α = 0.3" in seen["labels"] and seen["hlines"] == [0.3]
    assert "detector: coverage 0.42, error 0.25" in seen["labels"]
    assert (tmp_path / "rc.png").stat().st_size > 1000


def test_profiles_pick_one_correct_and_one_wrong(tmp_path):
    rows = [
        {"id": "0", "correct": False},  # no profile: skipped
        {"id": "1", "correct": False, "answer": "Lyon", "token_epistemic": [0.1, 0.3],
         "token_aleatoric": [0.2, 0.25]},
        {"id": "2", "correct": True, "answer": "Paris", "token_epistemic": [0.01],
         "token_aleatoric": [0.05]},
        {"id": "3", "correct": True, "answer": "x", "token_epistemic": [1.0],
         "token_aleatoric": [0.1]},
    ]
    assert [r["id"] for r in profile_examples(rows)] == ["2", "1"]
    p = tmp_path / "profile.png"
    assert plot_token_profiles(p, rows, title="t")
    assert p.stat().st_size > 1000
    assert not plot_token_profiles(tmp_path / "none.png", rows[:1])
    assert not (tmp_path / "none.png").exists()
