import json

import numpy as np
import pytest
from typer.testing import CliRunner

from isograd.cli import app
from isograd.validate.study import QUICK, correlations, study_config

ROW_KEYS = {"problem", "task", "width", "depth", "n_params", "estimator", "pearson", "spearman",
            "rhat_max", "seconds"}


def test_correlations():
    a = np.arange(10.0)
    r, rho = correlations(a, a**3)
    assert rho == pytest.approx(1.0) and 0.8 < r < 1.0
    r, rho = correlations(a, -a)
    assert r == pytest.approx(-1.0) and rho == pytest.approx(-1.0)
    assert np.isnan(correlations(a, np.ones(10))[0])
    # non-finite pairs are dropped, not propagated
    b = a.copy()
    b[3] = np.nan
    assert correlations(b, a)[1] == pytest.approx(1.0)


def test_study_config_overrides_and_reference_fallback():
    cfg = study_config(quick=True, problems=["binary_xor"], widths=[4, 16], chains=3)
    assert cfg.problems == ("binary_xor",) and cfg.widths == (4, 16)
    assert cfg.mcmc.num_chains == 3 and cfg.mcmc.num_warmup == QUICK.mcmc.num_warmup
    assert cfg.reference in {(d, w) for d in cfg.depths for w in cfg.widths}


def test_cli_quick_writes_every_output_and_resumes(tmp_path):
    """`isograd validate --quick` on two problems (the CI run of the harness)."""
    out = tmp_path / "v"
    args = ["validate", "--quick", "--problems", "binary_xor,regression_nonlinear",
            "--out", str(out)]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    rows = json.loads((out / "agreement.json").read_text())
    assert {(r["problem"], r["estimator"]) for r in rows} == {
        ("binary_xor", "gn"), ("binary_xor", "laplace"), ("binary_xor", "aleatoric"),
        ("regression_nonlinear", "gn"), ("regression_nonlinear", "laplace"),
    }
    for r in rows:
        assert ROW_KEYS <= set(r)
        assert -1 <= r["spearman"] <= 1 and r["rhat_max"] >= 0.99 and r["seconds"] > 0
        assert r["converged"] == (r["rhat_max"] <= 1.05)
    # the aleatoric term is the easy one: it must agree with the reference
    alea = next(r for r in rows if r["estimator"] == "aleatoric")
    assert alea["spearman"] > 0.5
    # Laplace (GGN) on the 1-D regression tracks the MCMC variance closely
    lap = next(r for r in rows if r["problem"] == "regression_nonlinear"
               and r["estimator"] == "laplace")
    assert lap["spearman"] > 0.8
    table = (out / "table.md").read_text()
    assert "binary_xor" in table and "0.65 / 0.68" in table  # the paper's numbers beside ours
    assert "Conjugate check" in table and "isograd validate --quick" in table
    assert (out / "trend.png").stat().st_size > 1000
    assert (out / "maps" / "binary_xor.png").stat().st_size > 1000
    assert (out / "maps" / "regression_nonlinear.png").stat().st_size > 1000
    conj = json.loads((out / "conjugate.json").read_text())
    assert conj["passed"]
    # a second run finds every configuration done and returns the same rows
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert json.loads((out / "agreement.json").read_text()) == rows


def test_study_setup_checks_names_and_restores_threads(tmp_path):
    """The start both studies share: a bad problem name fails before anything is written, and
    torch's thread count comes back whatever happens inside."""
    import torch

    from isograd.validate.study import StudyConfig, study_setup

    before = torch.get_num_threads()
    with pytest.raises(ValueError, match="unknown problem 'nope'"):
        with study_setup(StudyConfig(problems=("nope",)), tmp_path / "a"):
            pass
    assert not (tmp_path / "a").exists()
    cfg = StudyConfig(problems=("binary_linear",))
    with pytest.raises(RuntimeError, match="inside"):
        with study_setup(cfg, tmp_path / "b") as (runs, fp, _):
            assert runs == tmp_path / "b" / "runs" and runs.is_dir()
            assert fp == cfg.fingerprint() and torch.get_num_threads() == 1
            raise RuntimeError("inside")
    assert torch.get_num_threads() == before
