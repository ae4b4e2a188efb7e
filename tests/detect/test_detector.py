"""The detector: fitting, prediction against a brute-force twin, and its JSON file."""

from __future__ import annotations

import json

import numpy as np
import pytest

from isograd.detect import (
    CALIBRATION_SHARE,
    FORMAT_VERSION,
    SCALAR_FEATURES,
    Detector,
    DetectorError,
    DetectorFileError,
    MissingFeatureError,
    ModelMismatchError,
    Threshold,
    fit_detector,
    load_detector,
)
from isograd.evaluate import auroc
from tests.detect.rows import synthetic_rows


@pytest.fixture(scope="module")
def fitted():
    rows, correct = synthetic_rows(600, seed=0)
    return rows, correct, fit_detector(rows, correct, model_id="tiny", revision="r1", alpha=0.4)


def test_default_features_and_split(fitted):
    rows, _, det = fitted
    names = det.feature_names
    assert names[:len(SCALAR_FEATURES)] == list(SCALAR_FEATURES)
    assert names[len(SCALAR_FEATURES):] == [f"by_layer/{g}" for g in rows[0]["by_layer"]]
    n_cal = det.threshold.n_calibration
    assert n_cal + det.n_fit == len(rows)
    assert n_cal == pytest.approx(CALIBRATION_SHARE * len(rows), abs=1)


def log_matrix(rows) -> np.ndarray:
    """The default features written out by hand: logs of all but log_p."""
    return np.array([[r["log_p"]] + [np.log(r[n]) for n in SCALAR_FEATURES[1:]]
                     + [np.log(v) for v in r["by_layer"].values()] for r in rows])


def test_predict_matches_an_independent_sklearn_fit():
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    rows, correct = synthetic_rows(500, seed=6)
    cal_rows, cal_correct = synthetic_rows(300, seed=7)
    det = fit_detector(rows, correct, calibration_rows=cal_rows, calibration_labels=cal_correct)
    X = log_matrix(rows)
    scaler = StandardScaler().fit(X)
    np.testing.assert_allclose(det.mean, scaler.mean_, rtol=1e-12)
    np.testing.assert_allclose(det.scale, scaler.scale_, rtol=1e-12)
    lr = LogisticRegression(C=det.C, max_iter=5000).fit(scaler.transform(X), ~correct)
    np.testing.assert_allclose(det.coef, lr.coef_[0], rtol=1e-3, atol=1e-4)
    Xc = log_matrix(cal_rows)
    ref = lr.predict_proba(scaler.transform(Xc))[:, 1]
    out = det.predict(cal_rows)
    np.testing.assert_allclose(out.p_error, ref, rtol=1e-3, atol=1e-5)
    assert auroc(~cal_correct, out.p_error) > 0.75
    # the inner CV chose C from its grid by log-loss; a much weaker penalty is no better there
    assert det.C in [float(c) for c in np.logspace(-3, 2, 11)]


def test_log_floor_only_replaces_underflows():
    rows, correct = synthetic_rows(300, seed=8)
    det = fit_detector(rows, correct, features="model-agnostic")
    tiny = [{**rows[0], "embedding_grad": 1e-30}, {**rows[0], "embedding_grad": 0.0}]
    floor = next(f.floor for f in det.features if f.name == "embedding_grad")
    at_floor = [{**rows[0], "embedding_grad": floor}]
    pe = det.predict(tiny + at_floor).p_error
    assert pe[0] != pe[1] and pe[1] == pe[2] and np.isfinite(pe).all()


def test_threshold_and_abstain(fitted):
    rows, _, det = fitted
    out = det.predict(rows)
    t = det.threshold.threshold
    assert t is not None
    np.testing.assert_array_equal(out.abstain, out.p_error > t)
    never = Detector(**{**det.__dict__, "threshold": Threshold(None, 0.01, 0.1, 10, 0.0, None)})
    assert never.predict(rows).abstain.all()


def test_calibration_rows_choose_the_threshold():
    rows, correct = synthetic_rows(500, seed=1)
    cal_rows, cal_correct = synthetic_rows(800, seed=2)
    det = fit_detector(rows, correct, calibration_rows=cal_rows, calibration_labels=cal_correct,
                       alpha=0.4, features="model-agnostic")
    assert det.n_fit == 500 and det.threshold.n_calibration == 800
    assert det.feature_names == list(SCALAR_FEATURES)
    pe = det.predict(cal_rows).p_error
    ans = pe <= det.threshold.threshold
    assert det.threshold.coverage == pytest.approx(ans.mean())
    assert det.threshold.error == pytest.approx((~cal_correct[ans]).mean())


def test_user_features_calibration_maps_and_labels_from_rows():
    rows, correct = synthetic_rows(400, seed=3)
    for r, c in zip(rows, correct):
        r["correct"] = bool(c)
    for kind in ("isotonic", "platt"):
        det = fit_detector(rows, None, features=["msp", "grad_log_p"], calibration=kind)
        assert det.feature_names == ["msp", "grad_log_p"]
        assert det.calibration.kind.value == kind
        pe = det.predict(rows).p_error
        assert ((pe >= 0) & (pe <= 1)).all() and auroc(~correct, pe) > 0.7
    with pytest.raises(ValueError, match="allowed: 'default', 'model-agnostic'"):
        fit_detector(rows, None, features="everything")
    with pytest.raises(ValueError, match="allowed: 'none', 'isotonic', 'platt'"):
        fit_detector(rows, None, calibration="beta")


def test_rows_without_labels_or_features_are_refused():
    rows, correct = synthetic_rows(100, seed=4)
    with pytest.raises(DetectorError, match="carry no 'correct' label"):
        fit_detector(rows, None)
    with pytest.raises(DetectorError, match="100 booleans"):
        fit_detector(rows, correct[:50])
    with pytest.raises(MissingFeatureError, match="'total' is missing in row 0"):
        fit_detector(rows, correct, features=["total"])
    with pytest.raises(DetectorError, match="2 correct and 2 wrong"):
        fit_detector(rows[:10], np.ones(10, dtype=bool), features="model-agnostic")


def test_json_round_trips_exactly(fitted, tmp_path):
    rows, _, det = fitted
    path = tmp_path / "det.json"
    det.save(path)
    back = load_detector(path, model_id="tiny", revision="r1")
    assert back == det
    assert back.to_dict() == det.to_dict() == json.loads(path.read_text())
    np.testing.assert_array_equal(back.predict(rows).p_error, det.predict(rows).p_error)
    d = json.loads(path.read_text())
    assert d["format_version"] == FORMAT_VERSION and d["model_id"] == "tiny"
    assert set(d) == {"format_version", "isograd_version", "model_id", "revision", "fingerprint",
                      "n_fit", "features", "scaler", "logistic", "calibration", "threshold"}
    assert len(d["fingerprint"]) == 64 and not list(tmp_path.glob("*.tmp"))


def test_fingerprint_follows_the_data():
    rows, correct = synthetic_rows(200, seed=5)
    a = fit_detector(rows, correct, features="model-agnostic")
    b = fit_detector(rows, correct, features="model-agnostic")
    flipped = correct.copy()
    flipped[0] = ~flipped[0]
    c = fit_detector(rows, flipped, features="model-agnostic")
    assert a.fingerprint == b.fingerprint != c.fingerprint


def one_line(excinfo) -> None:
    assert "\n" not in str(excinfo.value) and str(excinfo.value)


@pytest.mark.parametrize("content,match", [
    ("{not json", "corrupt detector file"),
    ("[1, 2]", "not an object"),
    ('{"model_id": "x"}', "no integer 'format_version'"),
    ('{"format_version": 1, "features": []}', "corrupt detector file"),
])
def test_corrupt_files(tmp_path, content, match):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(DetectorFileError, match=match) as e:
        load_detector(path)
    one_line(e)


def test_future_version_truncated_and_missing_file(fitted, tmp_path):
    _, _, det = fitted
    d = det.to_dict()
    path = tmp_path / "future.json"
    path.write_text(json.dumps({**d, "format_version": FORMAT_VERSION + 1}))
    with pytest.raises(DetectorFileError, match="newer") as e:
        load_detector(path)
    one_line(e)
    path.write_text(json.dumps({**d, "scaler": {"mean": [0.0], "scale": [1.0]}}))
    with pytest.raises(DetectorFileError, match="features but") as e:
        load_detector(path)
    one_line(e)
    with pytest.raises(DetectorFileError, match="cannot read"):
        load_detector(tmp_path / "absent.json")
    assert issubclass(DetectorFileError, ValueError)


def test_model_mismatch_and_missing_feature(fitted, tmp_path):
    rows, _, det = fitted
    path = tmp_path / "det.json"
    det.save(path)
    with pytest.raises(ModelMismatchError, match="model 'tiny', not 'other'") as e:
        load_detector(path, model_id="other")
    one_line(e)
    with pytest.raises(ModelMismatchError, match="revision 'r1', not 'r2'"):
        load_detector(path, model_id="tiny", revision="r2")
    assert load_detector(path, model_id="other", revision="r2", allow_model_mismatch=True) == det
    assert load_detector(path) == det  # no model given: nothing to check
    stripped = [{k: v for k, v in r.items() if k != "by_layer"} for r in rows[:3]]
    with pytest.raises(MissingFeatureError, match="'by_layer/embed' is missing in row 0") as e:
        det.predict(stripped)
    one_line(e)
