"""Compare the semantic-entropy entailment back-ends on real samples (agreement and time), and
time every baseline (`compare_backends`, `time_baselines`; the command line is the benchmark
script ``benchmarks/compare_baselines.py``).

Per question: the greedy answer and K samples (seed = ``seed + index``), then each back-end
clusters the same samples. Reported per back-end: seconds and forward passes per question,
mean number of clusters, semantic entropy (weighted and discrete); per pair of back-ends: the
mean adjusted Rand index of the partitions, the fraction of sample pairs on which they agree
(same meaning or not), and the Spearman correlation of their semantic entropies.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Sequence
from typing import Any

from ...lm.sampling import sample_answers
from .semantic import (
    DEFAULT_THRESHOLDS,
    Entailment,
    cluster_entropy,
    make_judge,
    semantic_ids,
    unique_texts,
)


def adjusted_rand(a: Sequence[int], b: Sequence[int]) -> float:
    """Adjusted Rand index of two partitions (1 identical; ~0 chance; 1.0 when both trivial)."""
    from collections import Counter

    n = len(a)
    comb = lambda x: x * (x - 1) / 2  # noqa: E731
    sum_ij = sum(comb(v) for v in Counter(zip(a, b)).values())
    sa = sum(comb(v) for v in Counter(a).values())
    sb = sum(comb(v) for v in Counter(b).values())
    expected = sa * sb / comb(n) if n > 1 else 0.0
    top = (sa + sb) / 2 - expected
    return 1.0 if top == 0 else (sum_ij - expected) / top


def pair_agreement(a: Sequence[int], b: Sequence[int]) -> float:
    """Fraction of sample pairs that both partitions put together, or both apart."""
    pairs = list(itertools.combinations(range(len(a)), 2))
    if not pairs:
        return 1.0
    return sum((a[i] == a[j]) == (b[i] == b[j]) for i, j in pairs) / len(pairs)


def compare_backends(model: Any, tokenizer: Any, questions: Sequence[Any], *,
                     backends: Sequence[str] = ("ngram", "embedding", "llm"), k: int = 10,
                     temperature: float = 1.0, max_new_tokens: int = 32, seed: int = 0,
                     nli: Any = None) -> dict:
    """Run every back-end on the same samples of each question; return rows and a summary."""
    from ...lm.prompts import qa_prompt

    rows = []
    for n, q in enumerate(questions):
        prompt = qa_prompt(tokenizer, q.question)
        t0 = time.perf_counter()
        samples = sample_answers(model, tokenizer, prompt, k=k, temperature=temperature,
                                 max_new_tokens=max_new_tokens, seed=seed + n)
        row: dict[str, Any] = {"id": q.id, "question": q.question,
                               "samples": [s.text for s in samples],
                               "sample_s": time.perf_counter() - t0, "backends": {}}
        weights = [s.mean_logprob for s in samples]
        for b in backends:
            be = Entailment.parse(b)
            texts = [s.text for s in samples]
            t0 = time.perf_counter()
            judge = make_judge(be, model, tokenizer, q.question, unique_texts(texts),
                               threshold=DEFAULT_THRESHOLDS[be], nli=nli)
            ids = semantic_ids(texts, judge)
            row["backends"][b] = {"ids": ids, "seconds": time.perf_counter() - t0,
                                  "forward_passes": judge.cost, "n_clusters": len(set(ids)),
                                  "p_yes": getattr(judge, "p_yes", None),
                                  "se_weighted": cluster_entropy(ids, weights),
                                  "se_discrete": cluster_entropy(ids)}
        rows.append(row)
        print(f"[{n + 1}/{len(questions)}] " + "  ".join(
            f"{b}: {v['n_clusters']} cl {v['seconds']:.1f}s" for b, v in row["backends"].items()),
            flush=True)
    return {"k": k, "temperature": temperature, "max_new_tokens": max_new_tokens, "seed": seed,
            "n": len(rows), "summary": summarize(rows, backends), "rows": rows}


def time_baselines(model: Any, tokenizer: Any, questions: Sequence[Any], *, k: int = 10,
                   max_new_tokens: int = 32, seed: int = 0) -> dict:
    """Every registered baseline (defaults) on each question, sharing one set of K samples.

    Returns per method the mean seconds and forward passes per question (the samples' time
    counted in each sampling method, as the pipeline does).
    """
    from ...lm.prompts import qa_prompt
    from . import BASELINES, QAContext, make_baseline

    acc: dict[str, dict[str, float]] = {m: {"seconds": 0.0, "forward_passes": 0.0}
                                        for m in ["greedy", "samples", *BASELINES]}
    for n, q in enumerate(questions):
        prompt = qa_prompt(tokenizer, q.question)
        t0 = time.perf_counter()
        answer = sample_answers(model, tokenizer, prompt, k=1, temperature=0.0,
                                max_new_tokens=max_new_tokens)[0]
        t1 = time.perf_counter()
        samples = tuple(sample_answers(model, tokenizer, prompt, k=k,
                                       max_new_tokens=max_new_tokens, seed=seed + n))
        t2 = time.perf_counter()
        acc["greedy"]["seconds"] += t1 - t0
        acc["samples"]["seconds"] += t2 - t1
        ctx = QAContext(q, prompt, answer, samples)
        for name in BASELINES:
            b = make_baseline(name)
            t0 = time.perf_counter()
            res = b(model, tokenizer, ctx)
            dt = time.perf_counter() - t0 + ((t2 - t1) if b.needs_samples else 0.0)
            acc[name]["seconds"] += dt
            acc[name]["forward_passes"] += res.forward_passes
    return {m: {k2: v / len(questions) for k2, v in d.items()} for m, d in acc.items()}


def summarize(rows: Sequence[dict], backends: Sequence[str]) -> dict:
    """Per back-end means and per pair agreement (see module docstring)."""
    from scipy.stats import spearmanr

    def mean(xs: Sequence[float]) -> float:
        return sum(xs) / len(xs) if xs else math.nan

    out: dict[str, Any] = {"backends": {}, "pairs": {}}
    for b in backends:
        vs = [r["backends"][b] for r in rows]
        out["backends"][b] = {k: mean([v[k] for v in vs]) for k in
                              ("seconds", "forward_passes", "n_clusters", "se_weighted",
                               "se_discrete")}
    for a, b in itertools.combinations(backends, 2):
        ia = [r["backends"][a]["ids"] for r in rows]
        ib = [r["backends"][b]["ids"] for r in rows]
        sa = [r["backends"][a]["se_weighted"] for r in rows]
        sb = [r["backends"][b]["se_weighted"] for r in rows]
        rho = spearmanr(sa, sb).statistic if len(rows) > 2 else math.nan
        out["pairs"][f"{a}~{b}"] = {
            "ari": mean([adjusted_rand(x, y) for x, y in zip(ia, ib)]),
            "pair_agreement": mean([pair_agreement(x, y) for x, y in zip(ia, ib)]),
            "spearman_se_weighted": float(rho)}
    return out
