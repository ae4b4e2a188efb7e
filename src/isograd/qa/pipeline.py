"""The QA pipeline behind ``isograd qa``: prompt -> answer -> grade -> scores -> metrics.

Per question (in dataset order), one line is appended to ``DIR/scores.jsonl`` and flushed:

* generation datasets: greedy answer (`greedy_answer`) -> grade (`grade`) -> gradient scores of
  the answer's exact generated tokens (`score`) -> each requested baseline (`make_baseline`);
  when a method needs samples, K samples are drawn once (`sample_answers`) and shared;
* ``truthfulqa-mc1``: no generation: the options are scored (`score_choices`), the model's pick
  is the option of highest summed log-likelihood, correct = the pick is the right option; the
  baselines see the picked option as the answer (sampling methods sample free-form answers to
  the same prompt).

Row fields: ``id, question, answer, correct, grade_score, grade_method, p, log_p, epistemic,
aleatoric, total, n_tokens``, one field per baseline, ``cost_<m>_s`` (seconds) and
``cost_<m>_fwd`` (forward-pass equivalents, a backward counting 2) per method, and for the
generation datasets the other two predictions (``p_<pred>``, ``epistemic_<pred>``,
``aleatoric_<pred>``) so every definition of p is measured on the same answers: "geometric" is
derived exactly from the sequence pass (∇ log p_geo = ∇ log p_seq / n), "first_token" costs one
more backward (``--no-alternatives`` skips it; "geometric" is always recorded).

``combined`` is a rank mean over all rows (it is not defined for one row alone): the lines
are written without it, and when the run completes the file is rewritten atomically with each
row's ``combined`` (the value reported in metrics.json). On resume the stale ``combined`` is
dropped and recomputed.

Resume: rows already in ``scores.jsonl`` are kept and their ids skipped; a truncated last line
(a killed write) is discarded and redone. ``DIR/config.json`` holds the options that determine
the rows; a rerun with other options into the same DIR is refused (``--limit`` may change).
Seeds: sampling uses a per-question seed derived from ``seed`` and the question id, so the
same command gives the same rows, whatever was interrupted.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .runfiles import (
    ALL_METHODS,
    QAConfig,
    RunMismatchError,
    check_config,
    parse_options,
    question_seed,
    read_rows,
    reheadline,
    rewrite_rows,
)
from .score_pairs import score_file

__all__ = ["ALL_METHODS", "QAConfig", "RunMismatchError", "finish", "parse_options",
           "print_table", "question_seed", "read_rows", "reheadline", "run_qa", "score_file"]
GRADIENT_FWD = 3.0  # one forward + one backward (a backward counts as 2 forward passes)
PREDICTIONS = ("sequence", "geometric", "first_token")


# ----------------------------------------------------------------------------- one question


@dataclass
class _Env:
    model: Any
    tokenizer: Any
    cfg: QAConfig
    baselines: dict[str, Any]


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def _gen_row(env: _Env, q: Any) -> tuple[dict[str, Any], Any, str]:
    from ..lm import greedy_answer, qa_prompt, score, scored_token_ids
    from .grading import grade

    cfg = env.cfg
    prompt = qa_prompt(env.tokenizer, q.question, cfg.prompt)
    ans, t_gen = _timed(lambda: greedy_answer(env.model, env.tokenizer, prompt,
                                              max_new_tokens=cfg.max_new_tokens))
    g = grade(q, ans.text, judge=cfg.judge)
    ids = scored_token_ids(env.model, env.tokenizer, prompt, ans.token_ids)
    s, t_sc = _timed(lambda: score(env.model, env.tokenizer, [prompt], [ids],
                                   prediction=cfg.prediction, method=cfg.norm_method))
    row: dict[str, Any] = {
        "id": q.id, "question": q.question, "answer": ans.text, "correct": bool(g.correct),
        "grade_score": g.score, "grade_method": g.method, "empty_answer": not ans.token_ids,
        "p": float(s.p[0]), "log_p": float(s.log_p[0]), "epistemic": float(s.epistemic[0]),
        "aleatoric": float(s.aleatoric[0]), "total": float(s.total[0]),
        "n_tokens": int(s.n_tokens[0]),
        "cost_generate_s": t_gen, "cost_epistemic_s": t_sc, "cost_epistemic_fwd": GRADIENT_FWD,
        # p(1-p) needs only the answer's log-probabilities, already known from generation
        "cost_aleatoric_s": 0.0, "cost_aleatoric_fwd": 0.0,
    }
    row.update(_alternatives(env, prompt, ids, s, extra_backward=cfg.alternatives))
    return row, ans, prompt


def _alternatives(env: _Env, prompt: str, ids: list[int], s: Any, *,
                  extra_backward: bool) -> dict[str, Any]:
    """p / epistemic / aleatoric of the predictions other than the run's own.

    "sequence" and "geometric" follow from each other exactly, at no cost
    (log p_geo = log p_seq / n, so ∇ log p_geo = ∇ log p_seq / n); the others need one more
    backward each and are computed only with `extra_backward`.
    """
    import torch

    from ..lm import score

    out: dict[str, Any] = {}
    pair = {"sequence": "geometric", "geometric": "sequence"}
    n = float(s.n_tokens[0])
    for pred in PREDICTIONS:
        if pred == s.prediction:
            continue
        if pair.get(s.prediction) == pred:
            scale = 1 / n if pred == "geometric" else n
            log_p = s.log_p[0] * scale
            p = torch.exp(log_p)
            epi, t = float(torch.exp(2 * log_p) * s.sq_grad_norm_log_p[0] * scale**2), 0.0
        elif extra_backward:
            alt, t = _timed(lambda pr=pred: score(env.model, env.tokenizer, [prompt], [ids],
                                                  prediction=pr, method=env.cfg.norm_method))
            p, epi = alt.p[0], float(alt.epistemic[0])
        else:
            continue
        out[f"p_{pred}"] = float(p)
        out[f"log_p_{pred}"] = float(log_p) if pair.get(s.prediction) == pred else float(alt.log_p[0])
        out[f"epistemic_{pred}"] = epi
        out[f"aleatoric_{pred}"] = float(p * (1 - p))
        out[f"cost_epistemic_{pred}_s"] = t
    return out


def _mc_row(env: _Env, q: Any) -> tuple[dict[str, Any], Any, str]:
    from ..lm import Sample, mc_prompt, score_choices
    from .grading import grade

    prompt = mc_prompt(env.tokenizer, q.question, env.cfg.prompt)
    s, t_sc = _timed(lambda: score_choices(env.model, env.tokenizer, [prompt], [list(q.options)]))
    pick = int(s.pick[0])
    g = grade(q, pick, judge=env.cfg.judge)
    ans = Sample(text=q.options[pick], token_ids=s.pick_token_ids[0],
                 token_logprobs=s.pick_token_logprobs[0])
    row = {
        "id": q.id, "question": q.question, "answer": q.options[pick], "correct": bool(g.correct),
        "grade_score": g.score, "grade_method": g.method, "pick": pick, "label": q.label,
        "option_logliks": list(s.option_logliks[0]),
        "p": float(s.p[0]), "log_p": math.log(float(s.p[0])) if float(s.p[0]) > 0 else None,
        "epistemic": float(s.epistemic[0]), "aleatoric": float(s.aleatoric[0]),
        "total": float(s.total[0]), "n_tokens": len(ans.token_ids),
        # scoring the options is the MC1 prediction itself: K forwards (one per option) + backward
        "cost_epistemic_s": t_sc, "cost_epistemic_fwd": len(q.options) + 2.0,
        "cost_aleatoric_s": 0.0, "cost_aleatoric_fwd": 0.0,
    }
    return row, ans, prompt


def _question_row(env: _Env, q: Any) -> dict[str, Any]:
    from ..lm import sample_answers
    from .baselines import QAContext

    cfg = env.cfg
    row, ans, prompt = (_mc_row if q.label is not None else _gen_row)(env, q)
    samples = None
    if any(b.needs_samples for b in env.baselines.values()):
        samples, t = _timed(lambda: tuple(sample_answers(
            env.model, env.tokenizer, prompt, k=cfg.k, temperature=cfg.temperature,
            max_new_tokens=cfg.max_new_tokens, seed=question_seed(cfg.seed, q.id))))
        row["cost_samples_s"] = t
        row["samples"] = [x.text for x in samples]
    ctx = QAContext(question=q, prompt=prompt, answer=ans, samples=samples)
    for name, b in env.baselines.items():
        res, t = _timed(lambda b=b: b(env.model, env.tokenizer, ctx))
        if b.needs_samples:  # the shared samples' time is part of this method's cost
            t += row["cost_samples_s"]
        row[name] = res.value
        row[f"cost_{name}_s"] = t
        row[f"cost_{name}_fwd"] = res.forward_passes
    return row


# ----------------------------------------------------------------------------- the run


def _baselines(cfg: QAConfig) -> dict[str, Any]:
    from .baselines import make_baseline

    out = {}
    for m in cfg.methods:
        opts = dict(cfg.baseline_options.get(m, {}))
        if m in ("naive_entropy", "semantic_entropy"):
            opts.setdefault("k", cfg.k)
            opts.setdefault("temperature", cfg.temperature)
            opts.setdefault("max_new_tokens", cfg.max_new_tokens)
            opts.setdefault("seed", cfg.seed)
        out[m] = make_baseline(m, **opts)
    return out


def run_metrics(rows: Sequence[dict[str, Any]], config: dict[str, Any], *,
                command: str | None = None) -> dict[str, Any]:
    """The metrics table of a run's rows under its `config` (a ``QAConfig.to_json()`` dict,
    recorded as given): the gradient terms, each baseline in ``config["methods"]``, their
    combinations and the AUROC under each definition of p. Pure: reads and writes nothing."""
    from ..evaluate import alternative_metrics, evaluate
    from .baselines import BASELINES

    seed = config.get("seed", 0)
    methods = {"epistemic": True, "aleatoric": True}
    methods.update({m: BASELINES[m].higher_is_uncertain for m in config["methods"]})
    extra = {"config": dict(config),
             "predictions": alternative_metrics(rows, config["prediction"], PREDICTIONS,
                                                seed=seed)}
    return evaluate(rows, methods, seed=seed, model=config.get("model"),
                    dataset=config.get("dataset"), command=command, extra=extra)


def finish(out: Path, cfg: QAConfig, questions: Sequence[Any], *,
           command: str | None = None) -> dict[str, Any]:
    """Metrics over the rows of `questions` found in DIR/scores.jsonl; rewrites the file with
    ``combined`` and writes metrics.json, report.md, roc.png."""
    from ..evaluate import score_columns, write_report
    from .baselines import BASELINES

    path = out / "scores.jsonl"
    rows = read_rows(path)
    wanted = {q.id for q in questions}
    done = [r for r in rows if r["id"] in wanted]
    for r in rows:
        r.pop("combined", None)
    methods = {"epistemic": True, "aleatoric": True}
    methods.update({m: BASELINES[m].higher_is_uncertain for m in cfg.methods})
    _, cols, _, _ = score_columns(done, methods, seed=cfg.seed)
    for r, v in zip(done, cols["combined"]):
        r["combined"] = float(v)
    rewrite_rows(path, rows)
    metrics = run_metrics(done, cfg.to_json(), command=command)
    write_report(out, metrics, done)
    return metrics


def run_qa(
    out: str | Path,
    *,
    model: str = "smollm2-135m",
    dataset: str = "truthfulqa-gen",
    data: str | None = None,
    limit: int | None = None,
    methods: Sequence[str] = ALL_METHODS,
    prediction: str = "geometric",
    prompt: str = "short",
    alternatives: bool = True,
    seed: int = 0,
    max_new_tokens: int = 24,
    k: int = 5,
    temperature: float = 1.0,
    dtype: str = "fp32",
    device: str = "cpu",
    load_options: dict[str, Any] | None = None,
    norm_method: str = "auto",
    judge: str = "auto",
    baseline_options: dict[str, dict[str, Any]] | None = None,
    progress: bool = True,
    command: str | None = None,
    loaded: tuple[Any, Any] | None = None,
    threads: int | None = None,
) -> dict[str, Any] | None:
    """Run the QA evaluation into `out` (resumable) and return the metrics dict.

    Args:
        out: output directory (scores.jsonl, config.json, metrics.json, report.md, roc.png).
        model: model name or path (`load_model`); recorded in config.json.
        dataset: "truthfulqa-gen" | "truthfulqa-mc1" | "triviaqa" | "nq-open".
        data: dataset file or folder (`load_dataset`'s ``data``).
        limit: the first `limit` questions in file order (None: all).
        methods: baselines to run besides the gradient scores (names of ``isograd.qa.baselines.BASELINES``).
        prediction: the definition of p for generated answers ("sequence", "geometric",
            "first_token").
        prompt: prompt style, "short" | "plain" | "fewshot" (`isograd.lm.PromptStyle`).
        alternatives: also record "first_token" (one extra backward per question); the
            "sequence"/"geometric" pair is always recorded (free).
        seed: seed of sampling and of the metrics' bootstrap.
        max_new_tokens: cap on answer tokens (greedy and samples).
        k, temperature: samples for the sampling baselines.
        dtype, device: model weights' dtype and device.
        load_options: more `load_model` options (device_map, revision, attn_implementation,
            trust_remote_code); not recorded in config.json.
        norm_method: gradient-norm engine ("auto", "loop", "ghost").
        judge: grading rule (`grade`'s ``judge``).
        baseline_options: per-method extra options for `make_baseline`.
        progress: show a tqdm progress bar.
        command: the command line, recorded in metrics.json / report.md.
        loaded: an already loaded ``(model, tokenizer)`` (tests, notebooks).
        threads: torch CPU threads for this call (None: torch's default). On a shared machine
            1 thread is often several times faster than oversubscribed threads; the thread
            count can change float rounding (~1e-6 relative), so keep it fixed within a run.

    Under torchrun each rank answers an interleaved share of the questions into its own part
    file and rank 0 merges them and writes the report (`isograd.distributed`).

    Returns:
        The metrics dict written to metrics.json (None on the other ranks of a torchrun job).
    """
    import torch

    from .. import distributed as dd
    from ..lm import Prediction, PromptStyle
    from .datasets import load_dataset

    Prediction.parse(prediction)
    prompt = PromptStyle.parse(prompt).value
    cfg = QAConfig(model=model, dataset=dataset, data=str(data) if data else None,
                   methods=tuple(methods), prediction=prediction, prompt=prompt,
                   alternatives=alternatives,
                   seed=seed, max_new_tokens=max_new_tokens, k=k, temperature=temperature,
                   dtype=dtype, device=device, norm_method=norm_method, judge=judge,
                   baseline_options=dict(baseline_options or {}))
    baselines = _baselines(cfg)  # unknown method names fail before anything is written
    questions = load_dataset(dataset, data=data, limit=limit)
    outp = Path(out)
    rank = dd.setup(device)
    dd.on_peer_failure(rank, outp / "scores.jsonl")
    if rank.main:  # one writer of config.json; the others then only read it
        check_config(outp, cfg)
    dd.barrier(rank)
    if not rank.main:
        check_config(outp, cfg)
    path = outp / "scores.jsonl"
    saved_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        dd.run_rows(path, questions,
                    _questions_rows(cfg, baselines, loaded, rank, load_options or {}),
                    key=lambda q: q.id, desc=f"qa {cfg.dataset}", progress=progress)
    finally:
        torch.set_num_threads(saved_threads)
    # rank 0 reports; the others wait so that the job ends with the report written
    metrics = finish(outp, cfg, questions, command=command) if rank.main else None
    dd.barrier(rank)
    return metrics


def _questions_rows(cfg: QAConfig, baselines: dict[str, Any], loaded: tuple[Any, Any] | None,
                    rank: Any, load_options: dict[str, Any]) -> Callable[[list[Any]], list]:
    """questions -> their rows; the model is loaded on the first call (on this rank's device)."""
    env: list[_Env] = []

    def compute(qs: list[Any]) -> list[dict[str, Any]]:
        if not env:
            import torch

            from .. import distributed as dd
            from ..lm import load_model

            m, tok = loaded if loaded is not None else load_model(
                cfg.model, dtype=cfg.dtype, device=dd.device_for(cfg.device, rank),
                **load_options)
            env.append(_Env(model=m, tokenizer=tok, cfg=cfg, baselines=baselines))
            torch.manual_seed(cfg.seed)
        return [_question_row(env[0], q) for q in qs]

    return compute


def print_table(metrics: dict[str, Any]) -> None:
    """Print the report's AUROC table (as report.md renders it)."""
    from ..evaluate import render_markdown

    print(render_markdown(metrics))
