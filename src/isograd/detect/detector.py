"""The detector: labelled rows -> P(answer wrong), with a certified answering threshold.

`fit_detector` fits a standardised L2 logistic regression on the rows' features, its inverse
regularisation C chosen by inner stratified cross-validation (log-loss), then picks the
answering threshold (`isograd.detect.abstain`) on calibration rows the regression never saw:
the given ``calibration_rows``, or else a held-back share (`CALIBRATION_SHARE`) of the fitting
rows, drawn stratified by label with a fixed seed.

A `Detector` is a small JSON file (`save` / `load_detector`), never a pickle; the file format
is documented on `Detector.to_dict`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .abstain import Threshold, check_level, choose_threshold
from .calibrate import Calibration, CalibrationMap, fit_calibrator, sigmoid
from .features import (
    DetectorError,
    Feature,
    FeatureSet,
    feature_names,
    make_features,
    raw_matrix,
    transform,
)

FORMAT_VERSION = 1
"""Version of the detector file format; a file with a larger one is refused."""

CALIBRATION_SHARE = 0.3
"""Share of the fitting rows held back to choose the threshold when no calibration rows are
given (stratified by label, seeded)."""

C_GRID = tuple(float(c) for c in np.logspace(-3, 2, 11))
"""Inverse L2 strengths the inner cross-validation chooses from."""

FOLDS = 5
"""Inner cross-validation folds (fewer when the rarer class has fewer rows; at least 2)."""


class DetectorFileError(DetectorError):
    """A detector file is unreadable: corrupt, or written by a newer format version."""


class ModelMismatchError(DetectorError):
    """A detector fitted on one model is applied to another (``allow_model_mismatch`` overrides)."""


@dataclass(frozen=True)
class DetectorOutput:
    """What a detector says about each row.

    Attributes:
        p_error: float64 [N], the probability that the answer is wrong.
        abstain: bool [N], True where the detector declines to answer (all True when its
            threshold is None).
    """

    p_error: NDArray[np.float64]
    abstain: NDArray[np.bool_]


@dataclass(frozen=True)
class Detector:
    """A fitted detector (see `fit_detector`); every field is what its JSON file holds."""

    features: tuple[Feature, ...]
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    coef: tuple[float, ...]
    intercept: float
    C: float
    calibration: CalibrationMap
    threshold: Threshold
    model_id: str | None
    revision: str | None
    fingerprint: str
    n_fit: int
    isograd_version: str

    @property
    def feature_names(self) -> list[str]:
        """The row fields it reads (``by_layer/<group>`` for a per-block entry)."""
        return [f.name for f in self.features]

    def predict(self, rows: Sequence[Mapping[str, Any]]) -> DetectorOutput:
        """P(wrong) and the abstain decision of each row.

        Raises:
            MissingFeatureError: a row lacks a feature (the message names it and the row).
        """
        pe = self.p_error(raw_matrix(rows, self.feature_names))
        return DetectorOutput(pe, ~self.threshold.answers(pe))

    def annotate(self, rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Copies of `rows`, each with its ``p_error`` and ``abstain`` (`predict`)."""
        out = self.predict(rows)
        return [{**r, "p_error": float(pe), "abstain": bool(a)}
                for r, pe, a in zip(rows, out.p_error, out.abstain)]

    def abstains_always(self) -> str | None:
        """The one line to tell a user when no threshold met α (every row abstains), else None."""
        t = self.threshold
        if t.threshold is not None:
            return None
        return (f"the detector has no threshold (none met alpha={t.alpha:g} at delta={t.delta:g} "
                f"on {t.n_calibration} calibration rows): every row gets abstain: true")

    def p_error(self, raw: NDArray[np.float64]) -> NDArray[np.float64]:
        """P(wrong) of raw feature values [N, F] (columns in `feature_names` order)."""
        z = (transform(self.features, raw) - np.array(self.mean)) / np.array(self.scale)
        return self.calibration(sigmoid(z @ np.array(self.coef) + self.intercept))

    def to_dict(self) -> dict[str, Any]:
        """The JSON file's content.

        Fields: ``format_version`` (int), ``isograd_version``, ``model_id`` and ``revision``
        (str or null), ``fingerprint`` (sha256 of the fitting features and labels), ``n_fit``,
        ``features`` (list of {name, transform: identity|log, floor}), ``scaler`` ({mean,
        scale}, one per feature), ``logistic`` ({coef, intercept, C}), ``calibration``
        ({kind: none|isotonic|platt, x, y}), ``threshold`` ({threshold: float or null,
        alpha, delta, n_calibration, coverage, error}).
        """
        return {
            "format_version": FORMAT_VERSION,
            "isograd_version": self.isograd_version,
            "model_id": self.model_id,
            "revision": self.revision,
            "fingerprint": self.fingerprint,
            "n_fit": self.n_fit,
            "features": [f.to_dict() for f in self.features],
            "scaler": {"mean": list(self.mean), "scale": list(self.scale)},
            "logistic": {"coef": list(self.coef), "intercept": self.intercept, "C": self.C},
            "calibration": self.calibration.to_dict(),
            "threshold": self.threshold.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Detector:
        """Inverse of `to_dict`.

        Raises:
            DetectorFileError: a newer format version, or missing / malformed fields.
        """
        if not isinstance(d, Mapping):
            raise DetectorFileError("not a detector file: the JSON is not an object")
        version = d.get("format_version")
        if not isinstance(version, int) or isinstance(version, bool):
            raise DetectorFileError("not a detector file: no integer 'format_version'")
        if version > FORMAT_VERSION:
            raise DetectorFileError(f"detector file format {version} is newer than this isograd "
                                    f"reads ({FORMAT_VERSION}); upgrade isograd")
        try:
            det = cls(
                features=tuple(Feature.from_dict(f) for f in d["features"]),
                mean=_floats(d["scaler"]["mean"]), scale=_floats(d["scaler"]["scale"]),
                coef=_floats(d["logistic"]["coef"]), intercept=float(d["logistic"]["intercept"]),
                C=float(d["logistic"]["C"]), calibration=CalibrationMap.from_dict(d["calibration"]),
                threshold=Threshold.from_dict(d["threshold"]),
                model_id=_opt_str(d["model_id"]), revision=_opt_str(d["revision"]),
                fingerprint=str(d["fingerprint"]), n_fit=int(d["n_fit"]),
                isograd_version=str(d["isograd_version"]),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise DetectorFileError(f"corrupt detector file: {type(e).__name__}: {e}") from None
        n = len(det.features)
        if not n or not len(det.mean) == len(det.scale) == len(det.coef) == n:
            raise DetectorFileError(f"corrupt detector file: {n} features but "
                                    f"{len(det.mean)}/{len(det.scale)}/{len(det.coef)} "
                                    "scaler means/scales/coefficients")
        return det

    def save(self, path: str | Path) -> None:
        """Write the JSON file (atomically: a failed write leaves no partial file)."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, path)

    def check_model(self, model_id: str | None, revision: str | None = None) -> None:
        """Raise `ModelMismatchError` when a known model id or revision differs from the one
        the detector was fitted on (an unknown one on either side is not checked)."""
        for what, mine, theirs in (("model", self.model_id, model_id),
                                   ("revision", self.revision, revision)):
            if mine is not None and theirs is not None and mine != theirs:
                raise ModelMismatchError(f"detector was fitted on {what} {mine!r}, not {theirs!r};"
                                         " allow_model_mismatch overrides this check")


def _floats(v: Any) -> tuple[float, ...]:
    return tuple(float(x) for x in v)


def _opt_str(v: Any) -> str | None:
    return None if v is None else str(v)


def load_detector(path: str | Path, *, model_id: str | None = None, revision: str | None = None,
                  allow_model_mismatch: bool = False) -> Detector:
    """Read a detector file written by `Detector.save`.

    Args:
        path: the JSON file.
        model_id, revision: the model it is about to be applied to; a detector fitted on
            another one is refused unless `allow_model_mismatch`.
        allow_model_mismatch: skip the model check (only that check).

    Raises:
        DetectorFileError: unreadable, corrupt, or from a newer format version.
        ModelMismatchError: fitted on another model.
    """
    try:
        d = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise DetectorFileError(f"cannot read detector file {str(path)!r}: {e}") from None
    except json.JSONDecodeError as e:
        raise DetectorFileError(f"corrupt detector file {str(path)!r}: {e}") from None
    det = Detector.from_dict(d)
    if not allow_model_mismatch:
        det.check_model(model_id, revision)
    return det


def wrong_labels(rows: Sequence[Mapping[str, Any]], labels: ArrayLike | None) -> NDArray[np.int64]:
    """[N] 1 = wrong, from `labels` (1/True = the answer is CORRECT) or the rows' ``correct``.

    Raises:
        DetectorError: no labels and a row without a boolean ``correct``, or a length mismatch.
    """
    if labels is None:
        bad = [i for i, r in enumerate(rows) if not isinstance(r.get("correct"), bool)]
        if bad:
            raise DetectorError(f"{len(bad)} of {len(rows)} rows carry no 'correct' label "
                                f"(first: row {bad[0]}); grade them first")
        labels = [r["correct"] for r in rows]
    y = np.asarray(labels)
    if y.shape != (len(rows),) or not np.isin(y, (0, 1)).all():
        raise DetectorError(f"labels must be {len(rows)} booleans (True = correct), "
                            f"got shape {y.shape}")
    return 1 - y.astype(np.int64)


def fingerprint(names: Sequence[str], raw: NDArray[np.float64], wrong: NDArray[np.int64]) -> str:
    """sha256 of the feature names, raw fitting values and labels (which data a detector saw)."""
    h = hashlib.sha256(json.dumps(list(names)).encode())
    h.update(np.ascontiguousarray(raw, dtype="<f8").tobytes())
    h.update(np.ascontiguousarray(wrong, dtype="<i8").tobytes())
    return h.hexdigest()


def _split(n: int, wrong: NDArray[np.int64], share: float,
           seed: int) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    from sklearn.model_selection import train_test_split

    idx = np.arange(n)
    strat = wrong if min(wrong.sum(), n - wrong.sum()) >= 2 else None
    fit, cal = train_test_split(idx, test_size=share, random_state=seed, stratify=strat)
    return np.sort(fit), np.sort(cal)


def fit_detector(
    rows: Sequence[Mapping[str, Any]],
    labels: ArrayLike | None,
    *,
    features: str | FeatureSet | Sequence[str] = FeatureSet.DEFAULT,
    calibration_rows: Sequence[Mapping[str, Any]] | None = None,
    calibration_labels: ArrayLike | None = None,
    alpha: float = 0.3,
    delta: float = 0.1,
    model_id: str | None = None,
    revision: str | None = None,
    calibration: str | Calibration = Calibration.NONE,
    calibration_share: float = CALIBRATION_SHARE,
    seed: int = 0,
) -> Detector:
    """Fit a detector of wrong answers on labelled rows.

    Args:
        rows: score rows (mappings with the `isograd.lm.score` / `isograd qa` field names).
        labels: [N] 1/True = the answer is CORRECT (the rows' ``correct``); None reads each
            row's ``correct`` field.
        features: a `FeatureSet` ("default", "model-agnostic") or a list of row fields
            (``"by_layer"`` = every per-block group).
        calibration_rows, calibration_labels: rows to choose the threshold on (labels as
            `labels`); without them a `calibration_share` of `rows` is held back for it.
        alpha: target error rate among the answered, in (0, 1).
        delta: the threshold's guarantee holds with probability >= 1 − δ.
        model_id, revision: the model the rows come from (recorded, checked on load).
        calibration: map on top of the logistic output: "none" (default: the regression is
            fitted for log-loss already), "isotonic" or "platt" (fitted on out-of-fold
            predictions of the fitting rows).
        calibration_share: held-back share when no calibration rows are given.
        seed: the held-back split and the inner folds.

    Returns:
        The fitted `Detector`.
    """
    from .._version import __version__

    check_level("alpha", alpha)
    check_level("delta", delta)
    cal_kind = Calibration.parse(calibration)
    wrong = wrong_labels(rows, labels)
    names = feature_names(rows, features)
    raw = raw_matrix(rows, names)
    if calibration_rows is None:
        if calibration_labels is not None:
            raise DetectorError("calibration_labels given without calibration_rows")
        check_level("calibration_share", calibration_share)
        fit_idx, cal_idx = _split(len(rows), wrong, calibration_share, seed)
        raw_cal, wrong_cal = raw[cal_idx], wrong[cal_idx]
    else:
        fit_idx = np.arange(len(rows))
        raw_cal = raw_matrix(calibration_rows, names)
        wrong_cal = wrong_labels(calibration_rows, calibration_labels)
    feats = make_features(names, raw[fit_idx])
    X, y = transform(feats, raw[fit_idx]), wrong[fit_idx]
    model = fit_logistic(X, y, seed=seed)
    scaler, lr = model.named_steps["standardscaler"], model.named_steps["logisticregression"]
    if cal_kind is Calibration.NONE:
        cmap = CalibrationMap(cal_kind)
    else:  # the map is fitted on out-of-fold predictions at the chosen C
        from sklearn.model_selection import cross_val_predict

        oof = cross_val_predict(model, X, y, cv=inner_cv(y, seed), method="predict_proba")[:, 1]
        cmap = fit_calibrator(oof, y, method=cal_kind)
    det = Detector(
        features=tuple(feats), mean=_floats(scaler.mean_), scale=_floats(scaler.scale_),
        coef=_floats(lr.coef_[0]), intercept=float(lr.intercept_[0]), C=float(lr.C),
        calibration=cmap, threshold=Threshold(None, alpha, delta, 0, 0.0, None),
        model_id=model_id, revision=revision, fingerprint=fingerprint(names, raw, wrong),
        n_fit=len(fit_idx), isograd_version=__version__,
    )
    thr = choose_threshold(det.p_error(raw_cal), wrong_cal, alpha=alpha, delta=delta)
    return dataclasses.replace(det, threshold=thr)


def inner_cv(wrong: NDArray[np.int64], seed: int) -> Any:
    """The stratified folds of the inner cross-validation (`FOLDS`, fewer for a rare class).

    Raises:
        DetectorError: fewer than 2 rows of either class.
    """
    from sklearn.model_selection import StratifiedKFold

    minority = int(min(wrong.sum(), len(wrong) - wrong.sum()))
    if minority < 2:
        raise DetectorError(f"fitting needs at least 2 correct and 2 wrong answers among the "
                            f"fitting rows, got {minority} of the rarer class")
    return StratifiedKFold(n_splits=min(FOLDS, minority), shuffle=True, random_state=seed)


def fit_logistic(X: NDArray[np.float64], wrong: NDArray[np.int64], *, seed: int = 0) -> Any:
    """The standardised L2 logistic regression of `wrong` on features `X` [N, F], its C chosen
    from `C_GRID` by inner stratified CV (log-loss) and refitted on all rows: a scikit-learn
    pipeline (``standardscaler``, ``logisticregression``)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    pipe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000))
    search = GridSearchCV(pipe, {"logisticregression__C": list(C_GRID)},
                          cv=inner_cv(wrong, seed), scoring="neg_log_loss")
    search.fit(X, wrong)
    return search.best_estimator_
