"""The second labelling: AUROCs under both labels, from the rows' correct_f1."""

from __future__ import annotations

import numpy as np
import pytest

from isograd.evaluate import metrics as M
from isograd.evaluate.labellings import labellings_markdown, second_labelling


def test_second_labelling_aurocs_and_agreement():
    rng = np.random.default_rng(3)
    n = 60
    y1 = (rng.random(n) < 0.6).astype(int)
    y2 = y1.copy()
    y2[:10] = 1 - y2[:10]  # the labels disagree on 10 rows
    rows = [{"id": str(i), "correct": not y1[i], "correct_f1": bool(not y2[i])} for i in range(n)]
    s = {"a": rng.normal(size=n) + y1, "b": rng.normal(size=n) + y2}
    s["b"][0] = np.nan
    out = second_labelling(rows, y1, s, n_boot=50)
    assert out["agreement"] == pytest.approx(50 / 60)
    assert out["n_incorrect"] == int(y2.sum())
    assert out["methods"]["a"]["auroc_first"] == pytest.approx(M.auroc(y1, s["a"]))
    assert out["methods"]["a"]["auroc_second"] == pytest.approx(M.auroc(y2, s["a"]))
    ok = ~np.isnan(s["b"])
    assert out["methods"]["b"]["auroc_second"] == pytest.approx(M.auroc(y2[ok], s["b"][ok]))
    assert out["methods"]["b"]["auroc_second_mean"] == pytest.approx(
        M.bootstrap_auroc(y2[ok], s["b"][ok], n=50)[0])
    text = labellings_markdown({"second_labelling": out, "n": n, "n_incorrect": int(y1.sum())},
                               {"a": "score a"})
    assert "| score a |" in text and "83.3%" in text


def test_no_second_label_no_section():
    rows = [{"correct": True}, {"correct": False, "correct_f1": False}]
    assert second_labelling(rows, np.array([0, 1]), {"a": np.array([0.1, 0.2])}) is None
    assert labellings_markdown({}, {}) == ""
