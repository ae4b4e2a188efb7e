"""What each stage of ``isograd qa`` computes: items in, one row per question out.

Each ``*_rows`` function takes a batch of questions (and the upstream rows it needs) and returns
one row per question, keyed by ``id``; `isograd.qa.pipeline` runs them through the one stage
loop (`isograd.rows.runner.run_rows`). Row fields per stage:

* ``generate``: ``question, prompt, answer, token_ids, token_logprobs, empty_answer,
  cost_generate_s``; multiple choice (MC1) adds ``pick, label, option_logliks`` and, since
  scoring the options *is* the MC1 prediction (one pass gives the pick and its gradient),
  ``scores``: the score stage's fields, which that stage takes over without recomputing;
* ``grade``: ``correct, grade_score, grade_method``;
* ``score``: every per-row scalar of `isograd.lm.score`'s result (``p, log_p, epistemic,
  aleatoric, total, n_tokens, grad_log_p, epistemic_layer_scaled``, and any added later), the other
  definitions of p (``p_<pred>``, ``log_p_<pred>``, ``epistemic_<pred>``, ``aleatoric_<pred>``,
  ``cost_epistemic_<pred>_s``), ``cost_epistemic_s/_fwd`` and ``cost_aleatoric_s/_fwd``;
* ``trace``: ``epistemic_token_max, epistemic_token_mean, token_epistemic, token_aleatoric``
  (the per-token profile) and their ``cost_*_s``;
* ``samples``: ``samples`` (K answers: text, token ids, log-probabilities), ``cost_samples_s``;
* ``baseline-<name>``: ``<name>, cost_<name>_s, cost_<name>_fwd`` (a sampling method's seconds
  include drawing the shared samples).

Costs are per question: a batch's seconds divided by its size.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..lm.score import scalar_fields
from ..rows.runner import FINGERPRINT

GRADIENT_FWD = 3.0  # one forward + one backward (a backward counts as 2 forward passes)


@dataclass
class Env:
    """The loaded model and the run's options, shared by the stages of one run."""

    model: Any
    tokenizer: Any
    cfg: Any  # QAConfig
    batch_size: int = 1


def question_seed(seed: int, qid: str) -> int:
    """Per-question seed: independent of order, limit and interruptions."""
    h = int(hashlib.sha256(f"{seed}:{qid}".encode()).hexdigest()[:12], 16)
    return h % (2**31 - 1)


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def _greedy_batch(env: Env, prompts: list[str]) -> list[Any]:
    """Greedy answers to `prompts`, `env.batch_size` at a time (left padding)."""
    from ..lm import generate  # looked up at call time, so tests can watch it

    return list(generate.greedy_answers(env.model, env.tokenizer, prompts,
                                        max_new_tokens=env.cfg.max_new_tokens,
                                        batch_size=env.batch_size))


def check_prompts(env: Env, questions: list[Any]) -> None:
    """Refuse, before the generate stage writes a row, a question whose prompt (plus the
    answer tokens it may grow by; MC1: its longest option) exceeds the model's context."""
    from ..lm import qa_prompt
    from ..lm.batching import check_context, encode_answer, encode_prompt

    lengths = []
    for q in questions:
        prompt = qa_prompt(env.tokenizer, q.question, env.cfg.prompt)
        n = len(encode_prompt(env.tokenizer, prompt))
        if q.label is not None:
            n += max(len(encode_answer(env.tokenizer, prompt, o)) for o in q.options)
        lengths.append(n)
    mc = bool(questions) and questions[0].label is not None
    check_context(env.model, lengths, [f"question {q.id!r}'s prompt" for q in questions],
                  extra=0 if mc else env.cfg.max_new_tokens)


def generate_rows(env: Env, questions: list[Any]) -> list[dict[str, Any]]:
    """The ``generate`` stage: greedy answers (generation) or the options' pick (MC1)."""
    if questions[0].label is not None:
        return _mc_rows(env, questions)
    from ..lm import qa_prompt

    prompts = [qa_prompt(env.tokenizer, q.question, env.cfg.prompt) for q in questions]
    answers, t = timed(lambda: _greedy_batch(env, prompts))
    return [{"id": q.id, "question": q.question, "prompt": p, "answer": a.text,
             "token_ids": list(a.token_ids), "token_logprobs": list(a.token_logprobs),
             "empty_answer": not a.token_ids, "cost_generate_s": t / len(questions)}
            for q, p, a in zip(questions, prompts, answers)]


def _mc_rows(env: Env, questions: list[Any]) -> list[dict[str, Any]]:
    from ..lm import mc_prompt, score_choices

    prompts = [mc_prompt(env.tokenizer, q.question, env.cfg.prompt) for q in questions]
    s, t = timed(lambda: score_choices(env.model, env.tokenizer, prompts,
                                       [list(q.options) for q in questions],
                                       batch_size=env.batch_size, method=env.cfg.norm_method))
    rows = []
    for j, q in enumerate(questions):
        pick = int(s.pick[j])
        # the generated-answer path's fields (score_choices' row: p, log p, ‖∇ log p‖², the
        # embedding gradient, the per-block vector, ...)
        scores = {**s.row(j),
                  # scoring the options is the prediction itself: K forwards + one backward
                  "cost_epistemic_s": t / len(questions),
                  "cost_epistemic_fwd": len(q.options) + 2.0,
                  "cost_aleatoric_s": 0.0, "cost_aleatoric_fwd": 0.0}
        rows.append({"id": q.id, "question": q.question, "prompt": prompts[j],
                     "answer": q.options[pick], "token_ids": list(s.pick_token_ids[j]),
                     "token_logprobs": list(s.pick_token_logprobs[j]), "pick": pick,
                     "label": q.label, "option_logliks": list(s.option_logliks[j]),
                     "scores": scores})
    return rows


def grade_rows(env: Env, questions: list[Any], gen: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The ``grade`` stage: each answer against the question's references (`grade`)."""
    from .grading import f1_label, grade

    out = []
    for q in questions:
        g = gen[q.id]
        answer = g["pick"] if "pick" in g else g["answer"]
        g_ = grade(q, answer, judge=env.cfg.judge)
        out.append({"id": q.id, "correct": bool(g_.correct), "grade_score": g_.score,
                    "grade_method": g_.method, **f1_label(q, answer)})
    return out


def score_rows(env: Env, questions: list[Any], gen: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The ``score`` stage: gradient scores of each answer's exact generated tokens, batched."""
    from ..lm import score, scored_token_ids

    if "scores" in gen[questions[0].id]:  # MC1: computed with the pick (module docstring)
        return [{"id": q.id, **gen[q.id]["scores"]} for q in questions]
    cfg, n = env.cfg, len(questions)
    prompts = [_prompt(gen[q.id]) for q in questions]
    ids = [scored_token_ids(env.model, env.tokenizer, p, gen[q.id]["token_ids"])
           for q, p in zip(questions, prompts)]
    opts = dict(prediction=cfg.prediction, method=cfg.norm_method, batch_size=env.batch_size,
                layer_scale=cfg.layer_scale, last_layers=cfg.last_layers)
    s, t = timed(lambda: score(env.model, env.tokenizer, prompts, ids, **opts))
    rows = []
    for j, q in enumerate(questions):
        row = {"id": q.id, **scalar_fields(s, j), **s.row_vectors(j),
               "cost_epistemic_s": t / n,
               "cost_epistemic_fwd": GRADIENT_FWD,
               # p(1-p) needs only the answer's log-probabilities, known from generation
               "cost_aleatoric_s": 0.0, "cost_aleatoric_fwd": 0.0}
        rows.append(row)
    _alternatives(env, prompts, ids, s, rows)
    return rows


def trace_rows(env: Env, questions: list[Any], gen: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The ``trace`` stage: each answer's per-token profile (`isograd.lm.token_trace`), a pass
    of its own (about T times the score stage's work), batched over the answers' prefixes."""
    from ..lm import scored_token_ids, token_trace

    if "scores" in gen[questions[0].id]:
        raise ValueError("the trace is for generated answers; multiple choice has no profile")
    prompts = [_prompt(gen[q.id]) for q in questions]
    ids = [scored_token_ids(env.model, env.tokenizer, p, gen[q.id]["token_ids"])
           for q, p in zip(questions, prompts)]
    (traces, tmax, tmean), t = timed(lambda: token_trace(
        env.model, env.tokenizer, prompts, ids, method=env.cfg.norm_method))
    n = len(questions)
    return [{"id": q.id, "epistemic_token_max": float(tmax[j]),
             "epistemic_token_mean": float(tmean[j]),
             **traces[j].row_vectors(),
             "cost_epistemic_token_max_s": t / n, "cost_epistemic_token_mean_s": t / n}
            for j, q in enumerate(questions)]


def _alternatives(env: Env, prompts: list[str], ids: list[list[int]], s: Any,
                  rows: list[dict[str, Any]]) -> None:
    """Add p / log_p / epistemic / aleatoric of the predictions other than the run's own.

    "sequence" and "geometric" follow from each other exactly, at no cost
    (log p_geo = log p_seq / n, so ∇ log p_geo = ∇ log p_seq / n); the others need one more
    backward each and are computed only with ``cfg.alternatives``.
    """
    import torch

    from ..lm import Prediction, score

    pair = {"sequence": "geometric", "geometric": "sequence"}
    for pred in (p.value for p in Prediction):
        if pred == s.prediction:
            continue
        if pair.get(s.prediction) == pred:
            for j, row in enumerate(rows):
                scale = 1 / float(s.n_tokens[j]) if pred == "geometric" else float(s.n_tokens[j])
                log_p = s.log_p[j] * scale
                p = float(torch.exp(log_p))
                epi = float(torch.exp(2 * log_p) * s.grad_log_p[j] * scale**2)
                row.update({f"p_{pred}": p, f"log_p_{pred}": float(log_p),
                            f"epistemic_{pred}": epi, f"aleatoric_{pred}": p * (1 - p),
                            f"cost_epistemic_{pred}_s": 0.0})
        elif env.cfg.alternatives:
            alt, t = timed(lambda pr=pred: score(env.model, env.tokenizer, prompts, ids,
                                                 prediction=pr, method=env.cfg.norm_method,
                                                 batch_size=env.batch_size))
            for j, row in enumerate(rows):
                p = float(alt.p[j])
                row.update({f"p_{pred}": p, f"log_p_{pred}": float(alt.log_p[j]),
                            f"epistemic_{pred}": float(alt.epistemic[j]),
                            f"aleatoric_{pred}": p * (1 - p),
                            f"cost_epistemic_{pred}_s": t / len(rows)})


def _prompt(g: dict[str, Any]) -> str:
    if "prompt" not in g or "token_ids" not in g:
        from ..rows.stagefiles import RunMismatchError

        raise RunMismatchError(f"question {g['id']}: its generate row (converted from the earlier "
                               "format) lacks the prompt and token ids; pass --force-stage generate")
    return g["prompt"]


def sample_rows(env: Env, questions: list[Any], gen: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The ``samples`` stage: K sampled answers per question, shared by the sampling methods;
    a per-question seed makes them independent of order and interruptions."""
    from ..lm import sample_answers

    cfg = env.cfg
    out = []
    for q in questions:
        samples, t = timed(lambda q=q: sample_answers(
            env.model, env.tokenizer, _prompt(gen[q.id]), k=cfg.k, temperature=cfg.temperature,
            max_new_tokens=cfg.max_new_tokens, seed=question_seed(cfg.seed, q.id)))
        out.append({"id": q.id, "samples": [
            {"text": x.text, "token_ids": list(x.token_ids), "token_logprobs": list(x.token_logprobs)}
            for x in samples], "cost_samples_s": t})
    return out


def baseline_rows(env: Env, name: str, baseline: Any, questions: list[Any],
                  gen: dict[str, dict[str, Any]],
                  samples: dict[str, dict[str, Any]] | None) -> list[dict[str, Any]]:
    """The ``baseline-<name>`` stage: one baseline's score of each greedy answer."""
    from ..lm import Sample
    from .baselines import QAContext

    def sample(d: dict[str, Any]) -> Sample:
        return Sample(text=d["answer" if "answer" in d else "text"], token_ids=tuple(d["token_ids"]),
                      token_logprobs=tuple(d["token_logprobs"]))

    out = []
    for q in questions:
        g = gen[q.id]
        shared = samples[q.id] if baseline.needs_samples and samples is not None else None
        ctx = QAContext(question=q, prompt=_prompt(g), answer=sample(g),
                        samples=tuple(sample(x) for x in shared["samples"]) if shared else None)
        res, t = timed(lambda ctx=ctx: baseline(env.model, env.tokenizer, ctx))
        if shared:  # the shared samples' time is part of this method's cost
            t += shared["cost_samples_s"]
        out.append({"id": q.id, name: res.value, f"cost_{name}_s": t,
                    f"cost_{name}_fwd": res.forward_passes})
    return out


_HEAD = ("p", "log_p", "epistemic", "aleatoric")


def headline(row: dict[str, Any], old: str, new: str) -> dict[str, Any]:
    """A generation row with prediction `new` as its headline (p, log_p, epistemic, aleatoric,
    total) and `old` kept under suffixed names; multiple-choice rows (``pick``) have one p
    whatever the prediction and are returned as they are. Pure: `row` is not changed.

    Raises:
        KeyError: the row lacks `new`'s fields.
    """
    if old == new or "pick" in row:
        return row
    r = dict(row)
    p_new = r[f"p_{new}"]
    head_new = {"p": p_new, "epistemic": r[f"epistemic_{new}"], "aleatoric": r[f"aleatoric_{new}"],
                "log_p": r.get(f"log_p_{new}", math.log(p_new) if p_new > 0 else None)}
    for k in _HEAD:
        r[f"{k}_{old}"] = r[k]
        r.pop(f"{k}_{new}", None)
        r[k] = head_new[k]
    r["total"] = r["epistemic"] + r["aleatoric"]
    # a derived pair shares one backward: the headline's cost stays; else swap the costs
    pair = {old, new} == {"sequence", "geometric"}
    alt_cost = r.pop(f"cost_epistemic_{new}_s", 0.0)
    r[f"cost_epistemic_{old}_s"] = 0.0 if pair else r["cost_epistemic_s"]
    if not pair:
        r["cost_epistemic_s"] = alt_cost
    return r


def join_row(gen: dict[str, Any], grade: dict[str, Any], score: dict[str, Any],
             samples: dict[str, Any] | None, baselines: Sequence[dict[str, Any]],
             trace: dict[str, Any] | None = None) -> dict[str, Any]:
    """One question's row of the joined view (scores.jsonl): every stage's fields, without the
    generate stage's internals (prompt, token ids and log-probabilities, MC1 ``scores``).
    A question outside a run's ``subset`` has no samples, baselines or trace rows; the rows'
    input fingerprints stay in their stage files."""
    skip = {"prompt", "token_ids", "token_logprobs", "scores", FINGERPRINT}
    row = {k: v for k, v in gen.items() if k not in skip}

    def fields(r: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in r.items() if k not in ("id", FINGERPRINT)}

    row.update(fields(grade))
    row.update(fields(score))
    if trace is not None:
        row.update(fields(trace))
    if samples is not None:
        row["cost_samples_s"] = samples["cost_samples_s"]
        row["samples"] = [x["text"] for x in samples["samples"]]
    for b in baselines:
        row.update(fields(b))
    return row
