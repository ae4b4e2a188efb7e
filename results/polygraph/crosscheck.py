"""Peer cross-check: LM-Polygraph's own baselines on the committed TruthfulQA-gen generations.

Runs LM-Polygraph 0.7.0's stat calculators and estimators (MSP, mean token entropy, P(True),
lexical similarity; semantic entropy is attempted) on exactly the SmolLM2-135M-Instruct answers
and samples of results/qa/truthfulqa-gen-200/scores.jsonl, and puts their AUROCs (same labels, same
300-resample bootstrap, seed 0) beside isograd's committed ones.

The committed answer texts are tokenized as continuations of their prompts and checked to be
the greedy path: one teacher-forced forward over prompt + answer must give each answer token as
the argmax at its position (cheaper than regenerating, and the same check); a row that fails is
reported and left out. LM-Polygraph's greedy statistics (``greedy_tokens``,
``greedy_log_probs``, ``greedy_log_likelihoods``) come from that forward, so its estimators read
the very tokens isograd scored.

Run from the repository root in an environment with lm-polygraph (docs/polygraph.md)::

    HF_HUB_OFFLINE=1 PYTHONPATH=src python results/polygraph/crosscheck.py

Writes results/polygraph/crosscheck.json, values.jsonl and crosscheck.md.
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
RUN = ROOT / "results/qa/truthfulqa-gen-200"
OUT = Path(__file__).resolve().parent
# both define these as the same number (−Σ log p of the answer tokens; mean next-token entropy);
# P(True) differs in prompt and read-out, so only its ranking is compared
SAME_DEFINITION = ("msp", "mean_token_entropy")


def _error_line(e: BaseException) -> str:
    return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:400]


def _greedy_ids(model, p_ids: list[int], ids: list[int], n: int):
    """(ids, log-probs [n, V] float64) when `ids` is the start of the greedy continuation of
    `p_ids`, extended greedily to the committed n tokens (the stripped text drops trailing
    whitespace tokens), else (None, None)."""
    ids = list(ids)
    with torch.no_grad():
        while True:
            logits = model(input_ids=torch.tensor([p_ids + ids])).logits[0]
            if len(ids) >= n:
                break
            ids.append(int(logits[-1].argmax()))
    logp = logits[len(p_ids) - 1:-1].double().log_softmax(-1)
    if not ids or logp.argmax(-1).tolist() != ids:
        return None, None
    return ids, logp.numpy()


def _ours(rows: list[dict], key: str, ours: dict) -> np.ndarray:
    """isograd's committed values of `key`, oriented so that higher = more uncertain."""
    sign = 1.0 if ours[key]["higher_is_uncertain"] else -1.0
    return np.array([sign * r[key] for r in rows], dtype=np.float64)


def _ours_auroc(y: np.ndarray, vals: np.ndarray, committed: dict) -> dict:
    """isograd's AUROC recomputed on the rows kept (the same bootstrap), and the committed one."""
    from isograd.evaluate.metrics import bootstrap_auroc

    mean, std = bootstrap_auroc(y, vals, n=300, seed=0)
    return {"isograd_auroc_mean": mean, "isograd_auroc_std": std,
            "isograd_committed_auroc_mean": committed["auroc_mean"]}


def _false_calculator():
    """LM-Polygraph's P(True) prompt, reading log p("False") instead of log p("True")."""
    from lm_polygraph.stat_calculators import PromptCalculator
    from lm_polygraph.stat_calculators.prompt import BasePromptCalculator

    class _PFalse(BasePromptCalculator):
        @staticmethod
        def meta_info():
            return ["p_false"], ["greedy_texts"]

        def __init__(self):
            super().__init__(PromptCalculator().prompt, "False", "p_false")

    return _PFalse()


def main() -> None:
    torch.set_num_threads(1)
    import lm_polygraph
    from lm_polygraph import WhiteboxModel
    from lm_polygraph.estimators import (
        LexicalSimilarity,
        MaximumSequenceProbability,
        MeanTokenEntropy,
        PTrue,
        SemanticEntropy,
    )
    from lm_polygraph.stat_calculators import EntropyCalculator, PromptCalculator
    from tqdm import tqdm

    from isograd.evaluate.metrics import bootstrap_auroc, spearman
    from isograd.evaluate.report import read_scores
    from isograd.lm import load_model, qa_prompt
    from isograd.lm.prompts import encode_answer, encode_prompt

    rows = read_scores(RUN / "scores.jsonl")
    cfg = json.loads((RUN / "config.json").read_text())
    ours = json.loads((RUN / "metrics.json").read_text())["methods"]
    model, tok = load_model(cfg["model"])
    tok.padding_side = "left"  # as WhiteboxModel.from_pretrained sets it for batched prompts
    wb = WhiteboxModel(model, tok, model_path=cfg["model"], instruct=True)

    # semantic entropy needs LM-Polygraph's NLI model (DeBERTa-large-MNLI from the hub)
    semantic_error = None
    try:
        from lm_polygraph.defaults.stat_calculator_builders.default_SemanticMatrixCalculator import (
            load_stat_calculator,
        )
        from omegaconf import OmegaConf

        load_stat_calculator(OmegaConf.create({"nli_model": {
            "deberta_path": "microsoft/deberta-large-mnli", "hf_cache": None, "batch_size": 10,
            "device": None}}), None)
    except Exception as e:  # noqa: BLE001 - recorded verbatim: it is the finding
        semantic_error = _error_line(e)
        traceback.print_exc(limit=1)

    stats: dict[str, list] = {k: [] for k in ("input_texts", "greedy_texts", "greedy_tokens",
                                              "greedy_log_probs", "greedy_log_likelihoods",
                                              "sample_texts")}
    mismatched: list[str] = []
    kept: list[dict] = []
    t0 = time.perf_counter()
    for r in tqdm(rows, desc="answers", file=sys.stderr):
        prompt = qa_prompt(tok, r["question"], cfg.get("prompt", "short"))
        p_ids = encode_prompt(tok, prompt)
        ids, logp = _greedy_ids(model, p_ids, encode_answer(tok, prompt, r["answer"]),
                                r["n_tokens"])
        if ids is None:  # the stripped text lost a leading space: put it back
            ids, logp = _greedy_ids(model, p_ids, encode_answer(tok, prompt, " " + r["answer"]),
                                    r["n_tokens"])
        if (ids is None or len(ids) != r["n_tokens"]
                or tok.decode(ids, skip_special_tokens=True).strip() != r["answer"]):
            mismatched.append(r["id"])
            continue
        stats["input_texts"].append(r["question"])
        stats["greedy_texts"].append(r["answer"])
        stats["greedy_tokens"].append(ids)
        stats["greedy_log_probs"].append(logp)
        stats["greedy_log_likelihoods"].append([float(logp[j, t]) for j, t in enumerate(ids)])
        stats["sample_texts"].append(list(r["samples"]))
        kept.append(r)
    t_answers = time.perf_counter() - t0

    stats.update(EntropyCalculator()(stats, stats["input_texts"], wb))
    p_true: list[float] = []
    p_false: list[float] = []
    rows = kept
    for i in tqdm(range(0, len(rows), 8), desc="P(True)", file=sys.stderr):
        batch = {k: v[i:i + 8] for k, v in stats.items()}
        p_true += list(PromptCalculator()(batch, batch["input_texts"], wb)["p_true"])
        p_false += list(_false_calculator()(batch, batch["input_texts"], wb)["p_false"])
    stats["p_true"] = p_true

    y = np.array([0 if r["correct"] else 1 for r in rows])
    theirs = {"msp": MaximumSequenceProbability(), "mean_token_entropy": MeanTokenEntropy(),
              "p_true": PTrue(), "lexical_similarity": LexicalSimilarity("rougeL")}
    values = {k: np.asarray(est(stats), dtype=np.float64) for k, est in theirs.items()}
    names = {k: str(est) for k, est in theirs.items()}
    # diagnostic: LM-Polygraph's P(True) prompt read out as isograd does (renormalised over the
    # two verdicts), to tell the read-out from the prompt
    lt, lf = np.asarray(p_true, dtype=np.float64), np.asarray(p_false, dtype=np.float64)
    values["p_true_renormalised"] = -(lt - np.logaddexp(lt, lf))
    names["p_true_renormalised"] = "PTrue prompt, p(True)/(p(True)+p(False)) (diagnostic)"
    table = []
    for key in values:
        mean, std = bootstrap_auroc(y, values[key], n=300, seed=0)
        row = {"method": key, "lm_polygraph_estimator": names[key],
               "lm_polygraph_auroc_mean": mean, "lm_polygraph_auroc_std": std}
        mine_key = "p_true" if key == "p_true_renormalised" else key
        if mine_key in ours:
            mine_vals = _ours(rows, mine_key, ours)
            row.update(_ours_auroc(y, mine_vals, ours[mine_key]),
                       spearman_with_isograd=spearman(mine_vals, values[key]))
            if key in SAME_DEFINITION:  # the same quantity: compare the values themselves
                row["max_abs_diff"] = float(np.max(np.abs(mine_vals - values[key])))
        table.append(row)
    semantic = {"method": "semantic_entropy", "lm_polygraph_estimator": str(SemanticEntropy()),
                "error": semantic_error,
                **_ours_auroc(y, _ours(rows, "semantic_entropy", ours), ours["semantic_entropy"])}
    table.append(semantic)

    result = {"lm_polygraph_version": lm_polygraph.__version__ if hasattr(lm_polygraph, "__version__")
              else "0.7.0", "torch_version": torch.__version__, "run": "results/qa/truthfulqa-gen-200",
              "n": len(rows), "n_incorrect": int(y.sum()), "not_greedy": mismatched,
              "seconds_answers": round(t_answers, 1), "table": table}
    (OUT / "crosscheck.json").write_text(json.dumps(result, indent=2) + "\n")
    with (OUT / "values.jsonl").open("w") as f:
        for i, r in enumerate(rows):
            f.write(json.dumps({"id": r["id"], **{k: float(v[i]) for k, v in values.items()}}) + "\n")
    (OUT / "crosscheck.md").write_text(markdown(result))
    print(markdown(result))


def markdown(result: dict) -> str:
    """The side-by-side AUROC table (mean ± std over 300 bootstrap resamples)."""
    lines = [f"LM-Polygraph {result['lm_polygraph_version']} vs isograd on the committed "
             f"TruthfulQA-gen run ({result['n']} questions, {result['n_incorrect']} incorrect; "
             f"{len(result['not_greedy'])} committed answers left out as not the greedy path). AUROC for predicting an incorrect answer.", "",
             "| method | LM-Polygraph estimator | LM-Polygraph | isograd | Spearman | max abs diff |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in result["table"]:
        pg = (f"{r['lm_polygraph_auroc_mean']:.3f} ± {r['lm_polygraph_auroc_std']:.3f}"
              if "lm_polygraph_auroc_mean" in r else f"not run: {r.get('error')}")
        mine = (f"{r['isograd_auroc_mean']:.3f} ± {r['isograd_auroc_std']:.3f}"
                if "isograd_auroc_mean" in r else "–")
        sp = f"{r['spearman_with_isograd']:+.3f}" if "spearman_with_isograd" in r else "–"
        diff = f"{r['max_abs_diff']:.2g}" if "max_abs_diff" in r else "–"
        lines.append(f"| {r['method']} | {r['lm_polygraph_estimator']} | {pg} | {mine} | {sp} "
                     f"| {diff} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
