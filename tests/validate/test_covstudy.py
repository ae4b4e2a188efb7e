"""`isograd validate --study covariance --quick`: the CI run of the covariance study."""

import json
import math

from typer.testing import CliRunner

from isograd.cli import app
from isograd.validate.covstudy import COVARIANCES
from isograd.validate.study import COVARIANCE_STUDY, Study, study_config

FIELDS = {"problem", "depth", "width", "covariance", "pearson", "spearman", "log_ratio_near",
          "log_ratio_far", "far_minus_near", "align_cos", "align_topk", "converged"}


def test_study_config_picks_the_covariance_defaults():
    cfg = study_config(study="covariance")
    assert cfg.widths == COVARIANCE_STUDY.widths and cfg.mcmc == COVARIANCE_STUDY.mcmc
    assert study_config(study=Study.AGREEMENT).widths != cfg.widths


def test_cli_covariance_quick_writes_every_output_and_resumes(tmp_path):
    out = tmp_path / "c"
    args = ["validate", "--study", "covariance", "--quick", "--problems",
            "binary_xor,regression_nonlinear", "--out", str(out)]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    rows = json.loads((out / "covariance.json").read_text())
    assert {(r["problem"], r["covariance"]) for r in rows} == {
        (p, c) for p in ("binary_xor", "regression_nonlinear") for c in COVARIANCES}
    for r in rows:
        assert FIELDS <= set(r)
        assert -1 <= r["spearman"] <= 1 and -1 <= r["align_cos"] <= 1
        assert math.isclose(r["far_minus_near"], r["log_ratio_far"] - r["log_ratio_near"])
    by = {(r["problem"], r["covariance"]): r for r in rows}
    # on the 1-D regression with a gap the training-data Laplace tracks MCMC, without the
    # isotropic term's far-from-data distortion
    lap, iso = by["regression_nonlinear", "laplace-train"], by["regression_nonlinear", "isotropic"]
    assert lap["spearman"] > 0.8 and abs(lap["far_minus_near"]) < abs(iso["far_minus_near"])
    spectra = json.loads((out / "spectra.json").read_text())
    assert len(spectra) == 2
    for s in spectra:
        assert 0 < s["post_eff_rank_frac"] <= 1 and 0 < s["laplace_eff_rank_frac"] <= 1
    md = (out / "covariance.md").read_text()
    assert "isograd validate --study covariance --quick" in md
    assert "The paper's three claims, measured" in md
    assert "| problem | isotropic | laplace-train | efisher-train |" in md  # covariances as columns
    assert (out / "spectra.png").stat().st_size > 1000
    assert (out / "maps" / "binary_xor.png").stat().st_size > 1000
    assert (out / "maps" / "regression_nonlinear.png").stat().st_size > 1000
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert json.loads((out / "covariance.json").read_text()) == rows


def test_cli_rejects_unknown_study(tmp_path, capsys):
    import pytest

    from isograd.cli import main

    with pytest.raises(SystemExit) as ei:
        main(["validate", "--study", "nope", "--out", str(tmp_path / "v")])
    err = capsys.readouterr().err
    assert ei.value.code == 2 and "--study" in err and "'covariance'" in err
    assert not (tmp_path / "v").exists()


def test_readme_covariance_figures_are_the_committed_run():
    """The README's covariance-study medians are recomputed from the committed covariance.json."""
    import re
    from pathlib import Path

    import numpy as np

    root = Path(__file__).resolve().parents[2]
    rows = json.loads((root / "results/validate/covariance/covariance.json").read_text())
    spectra = json.loads((root / "results/validate/covariance/spectra.json").read_text())
    readme = (root / "README.md").read_text()
    section = readme[readme.index("The paper's case for isotropy"):]
    section = section[: section.index("(docs/validation.md, \"The gap\")")]
    text = section.replace("−", "-")

    def med(cov: str, field: str) -> str:
        return f"{np.median([r[field] for r in rows if r['covariance'] == cov]):.2f}"

    for cov, field in [("isotropic", "spearman"), ("laplace-train", "spearman"),
                       ("fresh-ggn", "spearman"), ("eval-points", "spearman"),
                       ("isotropic", "far_minus_near"), ("fresh-ggn", "far_minus_near"),
                       ("shifted", "far_minus_near"), ("uniform", "far_minus_near"),
                       ("layer-scaled:weight-variance", "spearman")]:
        assert med(cov, field) in text, (cov, field)
    for depth in (1, 2):
        widths = sorted({s["width"] for s in spectra if s["depth"] == depth})
        for w in (widths[0], widths[-1]):
            lap = np.median([s["laplace_eff_rank_frac"] for s in spectra
                             if s["depth"] == depth and s["width"] == w])
            gn = np.median([r["spearman"] for r in rows if r["covariance"] == "isotropic"
                            and r["depth"] == depth and r["width"] == w])
            assert f"{lap:.2f}" in text and f"{gn:.2f}" in text, (depth, w)
    assert re.search(r"\b64 configurations", text)
    assert len({(r["problem"], r["depth"], r["width"]) for r in rows}) == 64
