"""Trust or abstain: the detector of wrong answers measured on the committed QA runs.

Usage (from the repository root; nothing is run on a model, only the run folders are read):

    OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python results/trust/study.py [--readme] [--quick]

Writes results/trust/study.json (every number), results/trust/report.md (the tables) and the
figures beside them; ``--readme`` also writes the tables into README.md between its
``<!-- trust-tables -->`` markers (tests/test_readme.py holds them to study.json). ``--quick``
(fewer splits and resamples) is for trying the script, never for the committed files.

What it measures, all with `isograd.detect`:
- within each set, out of fold: the detector (default features), the same without its gradient
  features (paired bootstrap of the AUROC difference), isotonic-calibrated single scores, and
  the σ²-fitted total;
- transfer: a detector fitted on all of one set, applied to another; across models, a detector
  on the model-agnostic features fitted on one model's run, applied to the other model's run of
  the same questions (issue 24: SmolLM2 and Gemma 3);
- ARC-Easy: fitted on train, the threshold certified on validation, measured on test, at
  α ∈ {0.35, 0.4, 0.45} (δ = 0.1), beside a detector on log p alone;
- the guarantee checked empirically on random calibration/test halves (`split_check`);
- the factual sets' precision among the most confident answers.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from isograd.detect import (
    FeatureSet,
    choose_threshold,
    fit_detector,
    fit_sigma2,
    oof_detector,
    split_check,
    within_set,
)
from isograd.detect.study import probability_metrics
from isograd.evaluate.calibration import plot_reliability
from isograd.qa.detector_rows import RunRows, run_rows

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
QA = ROOT / "results" / "qa"
MARK = ("<!-- trust-tables -->", "<!-- /trust-tables -->")
COMMAND = "OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python results/trust/study.py --readme"

SETS = {"TriviaQA": "triviaqa", "NQ-open": "nq-open", "TruthfulQA gen": "truthfulqa-gen",
        "ARC-Easy test": "arc-easy-test"}
"""The sets measured within (name -> results/qa folder)."""
ARC = {"train": "arc-easy-train", "validation": "arc-easy-validation", "test": "arc-easy-test"}
TRANSFER = (("TriviaQA", "NQ-open"), ("NQ-open", "TriviaQA"), ("TriviaQA", "TruthfulQA gen"),
            ("NQ-open", "TruthfulQA gen"))
MODEL_TRANSFER = (("arc-easy-train", "gemma3-270m-arc-easy-test"),
                  ("gemma3-270m-arc-easy-test", "arc-easy-test"),
                  ("triviaqa", "gemma3-270m-triviaqa"), ("gemma3-270m-triviaqa", "triviaqa"))
"""(fitted on, applied to) results/qa folders across the two model families; a pair is measured
once both runs are finished."""
ARC_ALPHAS = (0.35, 0.4, 0.45)
FACTUAL_ALPHAS = (0.8, 0.9)
"""α for the guarantee check on TriviaQA and NQ-open: the lowest levels a detector certifies
there (their most confident answers are wrong 70% of the time and more)."""
DELTA = 0.1
TOP = (5, 10, 50, 100)
SINGLE = ("msp", "mean_token_entropy", "grad_log_p", "epistemic", "combined")
LABEL = {"msp": "MSP", "mean_token_entropy": "mean token entropy", "grad_log_p": "‖∇log p‖²",
         "epistemic": "epistemic (paper)", "combined": "combined (paper)"}


def slug(name: str) -> str:
    return name.lower().replace(" ", "-")


def load(folder: str) -> RunRows | None:
    d = QA / folder
    return run_rows(d) if (d / "scores.jsonl").is_file() else None


def threshold_on(p_cal, w_cal, p_test, w_test, alpha: float) -> dict:
    thr = choose_threshold(p_cal, w_cal, alpha=alpha, delta=DELTA)
    ans = thr.answers(p_test)
    return {"alpha": alpha, "delta": DELTA, "threshold": thr.threshold,
            "calibration_coverage": thr.coverage, "calibration_error": thr.error,
            "test_coverage": float(ans.mean()), "test_answered": int(ans.sum()),
            "test_error": float(w_test[ans].mean()) if ans.any() else None}


def lowest_certified(p_cal, w_cal, top: float = 0.6) -> float | None:
    """The lowest α on a 0.01 grid from 0.2 to `top` for which a threshold is certified."""
    for a in np.round(np.arange(0.2, top + 0.005, 0.01), 2):
        if choose_threshold(p_cal, w_cal, alpha=float(a), delta=DELTA).threshold is not None:
            return float(a)
    return None


def study(quick: bool) -> dict:
    splits, n_boot = (50, 100) if quick else (500, 300)
    runs = {name: load(folder) for name, folder in SETS.items()}
    runs = {k: v for k, v in runs.items() if v is not None}
    out: dict = {"command": COMMAND, "delta": DELTA, "splits": splits, "bootstrap": n_boot,
                 "sets": {k: {"folder": f"results/qa/{SETS[k]}", "n": len(v.rows),
                              "n_wrong": int((~v.correct).sum()), "model": v.model_id}
                          for k, v in runs.items()},
                 "within": {}, "sigma2": {}, "transfer": [], "precision": {}, "lowest_alpha": {},
                 "guarantee": {}}
    oof = {}
    for name, r in runs.items():
        t0 = time.time()
        out["within"][name] = within_set(r.rows, r.correct, n_boot=n_boot)
        oof[name] = oof_detector(r.rows, r.correct)
        fit = fit_sigma2([x["p"] for x in r.rows], [x["grad_log_p"] for x in r.rows], r.correct)
        rel = fit.reliability()
        out["sigma2"][name] = {"sigma2": fit.sigma2, "mse": fit.mse,
                               "mse_aleatoric_only": fit.mse_aleatoric_only, "gap": rel.ece}
        fit.plot(HERE / f"sigma2-{slug(name)}.png",
                 title=f"σ²-fitted total on {name} (all {len(r.rows)} rows)")
        w = ~r.correct
        probs = {"detector (out of fold)": oof[name]}
        plot_reliability(HERE / f"reliability-{slug(name)}.png", w.astype(int), probs,
                         title=f"Detector P(wrong) on {name}, out of fold")
        print(f"{name}: within-set done in {time.time() - t0:.0f} s", file=sys.stderr)
    for src, dst in TRANSFER:
        if src in runs and dst in runs:
            det = fit_detector(runs[src].rows, runs[src].correct, model_id=runs[src].model_id)
            pe = det.predict(runs[dst].rows).p_error
            out["transfer"].append({"fit": src, "apply": dst,
                                    **probability_metrics((~runs[dst].correct).astype(int), pe),
                                    "within_auroc": out["within"][dst]["detector"]["auroc"]})
    for name in ("TriviaQA", "NQ-open"):
        if name in runs:
            w = (~runs[name].correct).astype(int)
            order = np.argsort(oof[name], kind="stable")
            out["precision"][name] = {str(k): float(1 - w[order[:k]].mean()) for k in TOP}
            # calibrated on all the set's out-of-fold rows: the most this set can certify
            out["lowest_alpha"][name] = lowest_certified(oof[name], w, top=0.99)
            out["guarantee"][name] = {
                str(a): split_check(oof[name], w, alpha=a, delta=DELTA, splits=splits).to_dict()
                for a in FACTUAL_ALPHAS}
    out["model_transfer"] = model_transfer()
    arc = {k: load(v) for k, v in ARC.items()}
    if all(arc.values()):
        out["arc"] = arc_study(arc, splits)
    return out


def model_transfer() -> list[dict]:
    """Each finished pair of `MODEL_TRANSFER`: a model-agnostic detector fitted on all of one
    model's run and applied to the other model's run, beside the target's own out-of-fold
    detector on the same features."""
    out = []
    for src, dst in MODEL_TRANSFER:
        a, b = load(src), load(dst)
        if a is None or b is None or not (QA / dst / "metrics.json").is_file():
            continue
        det = fit_detector(a.rows, a.correct, features=FeatureSet.MODEL_AGNOSTIC,
                           model_id=a.model_id)
        w = (~b.correct).astype(int)
        own = oof_detector(b.rows, b.correct, features=FeatureSet.MODEL_AGNOSTIC)
        p = det.predict(b.rows).p_error
        out.append({"fit": src, "fit_model": a.model_id, "apply": dst, "apply_model": b.model_id,
                    "n": len(b.rows), "n_wrong": int(w.sum()), **probability_metrics(w, p),
                    "mean_p_error": float(np.mean(p)),
                    "within_auroc": probability_metrics(w, own)["auroc"],
                    "scale": {f: median_of(b.rows, f) / median_of(a.rows, f) for f in SCALE},
                    "logit_shift": logit_shift(det, a.rows, b.rows)})
    return out


def logit_shift(det, fit_rows: list[dict], apply_rows: list[dict]) -> float:
    """How far the target's median gradient norms move the detector's logit from the fitted
    run's: Σ over the log-gradient features of coefficient / scale × log(median ratio)."""
    names = [f.name for f in det.features]
    return float(sum(det.coef[i] / det.scale[i]
                     * np.log(median_of(apply_rows, n) / median_of(fit_rows, n))
                     for i, n in enumerate(names) if n in GRADIENTS))


GRADIENTS = ("grad_log_p", "epistemic", "embedding_grad")


SCALE = ("grad_log_p", "embedding_grad")
"""The gradient norms whose scale the cross-model table compares (median on the target run over
median on the fitted run): each model has its own."""


def median_of(rows: list[dict], field: str) -> float:
    return float(np.median([float(r[field]) for r in rows]))


def arc_study(arc: dict[str, RunRows], splits: int) -> dict:
    """Fit on train, certify on validation, measure on test; the guarantee on random halves of
    validation + test (both scored by the train-fitted detector)."""
    tr, va, te = arc["train"], arc["validation"], arc["test"]
    res: dict = {"n": {k: len(v.rows) for k, v in arc.items()},
                 "accuracy": {k: float(v.correct.mean()) for k, v in arc.items()}}
    w_va, w_te = (~va.correct).astype(int), (~te.correct).astype(int)
    for key, feats in (("detector", FeatureSet.DEFAULT), ("log_p only", ["log_p"])):
        det = fit_detector(tr.rows, tr.correct, features=feats, model_id=tr.model_id)
        p_va, p_te = det.predict(va.rows).p_error, det.predict(te.rows).p_error
        res[key] = {"test": probability_metrics(w_te, p_te),
                    "alphas": [threshold_on(p_va, w_va, p_te, w_te, a) for a in ARC_ALPHAS],
                    "lowest_certified_alpha": lowest_certified(p_va, w_va)}
        if key == "detector":
            pooled, w_pool = np.concatenate([p_va, p_te]), np.concatenate([w_va, w_te])
            res["guarantee"] = {str(a): split_check(pooled, w_pool, alpha=a, delta=DELTA,
                                                    splits=splits).to_dict()
                                for a in ARC_ALPHAS}
    return res


# ---------------------------------------------------------------- tables
def f2(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}"


def f3(x: float | None) -> str:
    return "–" if x is None else f"{x:.3f}"


def tables(s: dict) -> list[str]:
    """The markdown tables of study.json `s` (the README block and report.md's body)."""
    sets = list(s["within"])
    head = "| out of fold | " + " | ".join(
        f"{k} (n = {s['sets'][k]['n']}, {s['sets'][k]['n'] - s['sets'][k]['n_wrong']} right)"
        for k in sets) + " |"
    out = ["**Within each set** (AUROC / Brier / ECE of P(wrong), each row predicted by a model "
           "fitted on the other folds):", "", head, "| --- |" + " --- |" * len(sets)]

    def row(label: str, key: str) -> None:
        cells = []
        for k in sets:
            m = s["within"][k].get(key)
            cells.append("–" if m is None else
                         f"{f2(m['auroc'])} / {f3(m['brier'])} / {f3(m['ece'])}")
        out.append(f"| {label} | " + " | ".join(cells) + " |")

    row("detector (default features)", "detector")
    row("detector without gradient features", "detector_no_gradient")
    for n in SINGLE:
        row(f"{LABEL[n]}, isotonic", f"{n} (isotonic)")
    out.append("| σ²-fitted total: AUROC / MSE against (y − p)² / calibration gap | " + " | ".join(
        f"{f2(s['within'][k]['total (sigma2 fitted)']['auroc'])} / "
        f"{f3(s['within'][k]['total (sigma2 fitted)']['mse'])} / "
        f"{f3(s['within'][k]['total (sigma2 fitted)']['gap'])}" for k in sets) + " |")
    out.append("| σ² fitted on all rows (MSE of p(1−p) alone) | " + " | ".join(
        f"{s['sigma2'][k]['sigma2']:.2g} ({s['sigma2'][k]['mse_aleatoric_only']:.3f})"
        for k in sets) + " |")
    out += ["", "**Does the gradient add information?** AUROC(detector) − AUROC(detector without "
            f"its gradient features), paired bootstrap over {s['bootstrap']} resamples:", "",
            "| set | difference | 95% interval | p |", "| --- | --- | --- | --- |"]
    for k in sets:
        g = s["within"][k]["gradient"]
        out.append(f"| {k} | {g['difference']:+.3f} | [{g['low']:+.3f}, {g['high']:+.3f}] | "
                   f"{g['p_value']:.2f} |")
    if s["transfer"]:
        out += ["", "**Transfer** (fitted on all of one set, applied to another; within: the "
                "target's own out-of-fold AUROC):", "",
                "| fitted on | applied to | AUROC | Brier | ECE | within |",
                "| --- | --- | --- | --- | --- | --- |"]
        for t in s["transfer"]:
            out.append(f"| {t['fit']} | {t['apply']} | {f2(t['auroc'])} | {f3(t['brier'])} | "
                       f"{f3(t['ece'])} | {f2(t['within_auroc'])} |")
    if s.get("model_transfer"):
        out += ["", "**Across models** (a detector on the model-agnostic features, fitted on all "
                "of one model's run and applied to the other model's run; within: the target's "
                "own out-of-fold detector on the same features; mean P(wrong) against the "
                "share wrong; scale: the target's median gradient norm over the fitted run's; "
                "logit shift: how far those scales (of ‖∇log p‖², epistemic and ‖∂ log p / ∂e‖²) "
                "move the detector's logit):",
                "", "| fitted on | applied to | n (wrong) | AUROC | Brier | ECE | mean P(wrong) | "
                "within | scale of ‖∇log p‖² | scale of ‖∂ log p / ∂e‖² | logit shift |",
                "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for t in s["model_transfer"]:
            out.append(f"| {t['fit']} ({t['fit_model']}) | {t['apply']} ({t['apply_model']}) | "
                       f"{t['n']} ({t['n_wrong']}) | {f2(t['auroc'])} | {f3(t['brier'])} | "
                       f"{f3(t['ece'])} | {f2(t['mean_p_error'])} ({f2(t['n_wrong'] / t['n'])}) "
                       f"| {f2(t['within_auroc'])} | {t['scale']['grad_log_p']:.3g} | "
                       f"{t['scale']['embedding_grad']:.3g} | {t['logit_shift']:+.2f} |")
    if "arc" in s:
        a = s["arc"]
        out += ["", f"**Abstention on ARC-Easy** (fitted on train, n = {a['n']['train']}; "
                f"threshold certified on validation, n = {a['n']['validation']}, δ = "
                f"{s['delta']}; measured on test, n = {a['n']['test']}, accuracy "
                f"{a['accuracy']['test']:.3f}):", "",
                "| detector | test AUROC | α | threshold | answered on test | error among "
                "answered on test |", "| --- | --- | --- | --- | --- | --- |"]
        for key in ("detector", "log_p only"):
            for t in a[key]["alphas"]:
                thr = "none certified" if t["threshold"] is None else f"{t['threshold']:.2f}"
                ans = (f"{t['test_coverage']:.1%} ({t['test_answered']})"
                       if t["threshold"] is not None else "0 (abstains on all)")
                out.append(f"| {key} | {f2(a[key]['test']['auroc'])} | {t['alpha']} | {thr} | "
                           f"{ans} | {f3(t['test_error'])} |")
        out += ["", "Lowest certified α (validation, 0.01 grid): detector "
                f"{f2(a['detector']['lowest_certified_alpha'])}, log p alone "
                f"{f2(a['log_p only']['lowest_certified_alpha'])}."]
    out += ["", f"**The guarantee, checked** ({s['splits']} random calibration/test halves; "
            f"δ = {s['delta']}; violation: the test half's error among the answered is above α; "
            "noise: the rate the test half's binomial noise alone gives at each threshold's "
            "error on all rows):", "",
            "| set | α | violations | on all rows | noise | no threshold | answered |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    checks = [(f"ARC-Easy validation + test ({s['arc']['n']['validation'] + s['arc']['n']['test']})",
               s["arc"]["guarantee"])] if "arc" in s else []
    checks += [(k, v) for k, v in s["guarantee"].items()]
    for name, by_alpha in checks:
        for a, c in by_alpha.items():
            out.append(f"| {name} | {a} | {c['violation_rate']:.3f} | "
                       f"{c['pooled_violation_rate']:.3f} | {c['noise_rate']:.3f} | "
                       f"{c['none_rate']:.2f} | {c['mean_coverage']:.1%} |")
    if s["precision"]:
        out += ["", "**The factual sets' most confident answers** (share right among the k "
                "answers the out-of-fold detector ranks most likely right):", "",
                "| set | " + " | ".join(f"top {k}" for k in TOP) + " |",
                "| --- |" + " --- |" * len(TOP)]
        for k, v in s["precision"].items():
            out.append(f"| {k} | " + " | ".join(f"{v[str(t)]:.2f}" for t in TOP) + " |")
        out += ["", "Lowest α certified with all of a set's out-of-fold rows as calibration rows "
                "(0.01 grid, δ = " f"{s['delta']}): " + ", ".join(
                    f"{k} {f2(v)}" for k, v in s["lowest_alpha"].items()) + "."]
    return out


def main() -> None:
    quick = "--quick" in sys.argv[1:]
    s = study(quick)
    (HERE / "study.json").write_text(json.dumps(s, indent=1) + "\n", encoding="utf-8")
    body = tables(s)
    (HERE / "report.md").write_text(
        "# Trust or abstain: the detector on the committed runs\n\n"
        f"Command: `{COMMAND}` (every number: study.json).\n\n" + "\n".join(body) + "\n\n"
        + "Figures: " + ", ".join(f"[σ² total, {k}](sigma2-{slug(k)}.png), "
                                  f"[reliability, {k}](reliability-{slug(k)}.png)"
                                  for k in s["within"]) + ".\n", encoding="utf-8")
    if "--readme" in sys.argv[1:] and not quick:
        sys.path.insert(0, str(QA))
        from summarize import write_readme

        write_readme(body, MARK)
    print("\n".join(body))


if __name__ == "__main__":
    main()
