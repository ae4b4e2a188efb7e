"""`isograd demo`: the QA main job's wiring, and what the synthetic example claims."""

from __future__ import annotations

import torch
from typer.testing import CliRunner

from isograd import demo as D
from isograd.cli import app


def test_synthetic_boundary_is_uncertain_and_far_points_are_the_blind_spot():
    u = D.synthetic_table()
    names = list(D.PROBES)
    b = names.index("on the boundary")
    assert int(u.aleatoric.argmax()) == b and int(u.epistemic.argmax()) == b
    for inside in ("inside class 0", "inside class 1"):
        assert u.p[names.index(inside)] > 0.99
    for far in ("far, off-data", "very far"):  # saturated network: no gradient far away
        assert u.epistemic[names.index(far)] < 0.01 * u.epistemic[b]
    torch.testing.assert_close(u.total, u.epistemic + u.aleatoric)


def test_synthetic_cli_prints_every_probe():
    res = CliRunner().invoke(app, ["demo", "--synthetic"])
    assert res.exit_code == 0, res.output
    assert all(name in res.output for name in D.PROBES)


def test_demo_runs_qa_with_the_documented_settings(monkeypatch, tmp_path):
    import isograd.qa.evaluation as E
    import isograd.qa.pipeline as P

    seen = {}

    def fake_run_qa(out, **kw):
        seen.update(kw, out=out)
        return {"sentinel": True}

    monkeypatch.setattr(P, "run_qa", fake_run_qa)
    monkeypatch.setattr(E, "print_table", lambda m: seen.update(printed=m))
    res = CliRunner().invoke(app, ["demo", "--out", str(tmp_path), "--threads", "1"])
    assert res.exit_code == 0, res.output
    assert seen["out"] == str(tmp_path) and seen["model"] == "smollm2-135m"
    assert seen["dataset"] == "truthfulqa-gen" and seen["limit"] == 20
    assert seen["methods"] == ("p_true", "msp", "mean_token_entropy")
    assert seen["max_new_tokens"] == 16 and seen["alternatives"] is False
    assert seen["threads"] == 1 and seen["printed"] == {"sentinel": True}
