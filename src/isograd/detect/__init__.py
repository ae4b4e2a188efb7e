"""Detectors of wrong answers: labelled score rows -> P(answer wrong), calibration, and
abstention with a guarantee; saved as small JSON files.

Pure numpy / scikit-learn / MAPIE (the ``detect`` extra, imported lazily); no torch code and
nothing from `isograd.lm` or `isograd.qa`, so that `isograd.lm.answer` can apply a detector.

- `fit_detector(rows, labels, ...)` -> `Detector`; `Detector.predict(rows)` -> `DetectorOutput`
  (``p_error``, ``abstain``); `Detector.save(path)`, `load_detector(path, ...)`.
- `FeatureSet`, `SCALAR_FEATURES`: which row fields it reads (`features`).
- `fit_calibrator` (isotonic, Platt on one score): the baselines a detector must beat.
- `fit_sigma2`: σ² of the paper's total = p(1−p) + σ²‖∇p‖² against (y − p)².
- `choose_threshold`: the certified answering threshold (MAPIE learn-then-test);
  `split_check`: the guarantee checked on random calibration/test splits.
- `within_set`: out-of-fold AUROC, Brier, ECE, log-loss of the detector, the detector without
  its gradient features (with a paired bootstrap), calibrated single scores, the σ² total.
"""

from .abstain import GRID, SplitCheck, Threshold, choose_threshold, split_check
from .calibrate import Calibration, CalibrationMap, Sigma2Fit, fit_calibrator, fit_sigma2
from .detector import (
    CALIBRATION_SHARE,
    FORMAT_VERSION,
    Detector,
    DetectorFileError,
    DetectorOutput,
    ModelMismatchError,
    fit_detector,
    load_detector,
    wrong_labels,
)
from .features import (
    SCALAR_FEATURES,
    DetectorError,
    Feature,
    FeatureSet,
    MissingFeatureError,
    feature_names,
)
from .study import oof_calibrated, oof_detector, oof_sigma2_total, within_set, without_gradient

__all__ = [
    "CALIBRATION_SHARE", "FORMAT_VERSION", "GRID", "SCALAR_FEATURES", "Calibration",
    "CalibrationMap", "Detector", "SplitCheck", "DetectorError", "DetectorFileError", "DetectorOutput",
    "Feature", "FeatureSet", "MissingFeatureError", "ModelMismatchError", "Sigma2Fit",
    "Threshold", "choose_threshold", "feature_names", "fit_calibrator", "fit_detector",
    "fit_sigma2", "load_detector", "oof_calibrated", "oof_detector", "oof_sigma2_total",
    "split_check", "within_set", "without_gradient", "wrong_labels",
]
