"""The QA pipeline behind ``isograd qa``: generate -> grade -> score -> trace -> baselines -> evaluate.

Each stage writes its own ``DIR/<stage>.jsonl`` (one row per question id) and
``DIR/<stage>.config.json`` (the options that determine its rows and the fingerprints of the
stages it reads); what each stage computes is in `isograd.qa.stages`, the files and the one
stage loop in `isograd.qa.stagefiles`.

| stage | reads | options | file |
| --- | --- | --- | --- |
| generate | the dataset | model, dataset, data, prompt, max_new_tokens, dtype, device | generate.jsonl |
| grade | generate | judge | grade.jsonl |
| score | generate | prediction, alternatives, norm_method (+ layer_scale, last_layers when not default) | score.jsonl |
| trace | generate | norm_method | trace.jsonl (only with ``trace``) |
| samples | generate | k, temperature, max_new_tokens, seed | samples.jsonl (only for sampling methods) |
| baseline-NAME | generate (+ samples) | the method's options | baseline-NAME.jsonl |
| evaluate | all of the above | methods, prediction, seed, subset | metrics.json, report.md, roc.png, scores.jsonl |

* ``subset=N``: the costly per-question stages (trace, samples, baselines) run on the first N
  questions only, the others on all (``trace_subset`` sets the trace's own N, for its ~T times
  the score's cost); each method is then evaluated on the questions that have it, and the report
  gives every method's n. N is no stage option: a larger N later computes only the rows the
  first run lacks.

* Each stage can run alone (``stage=``); a rerun computes only the rows a stage lacks, so a
  kill at any point loses at most the batch in flight. Adding a baseline computes only that
  baseline; another judge regrades without touching a gradient.
* A stage recorded with other options is refused (`RunMismatchError`) unless it is redone
  (``force_stages``): that deletes its rows and those of every stage that reads it, nothing else.
  ``prediction`` is the exception: any definition of p the score rows already hold
  ("sequence"/"geometric" always, "first_token" with ``alternatives``) is taken from them.
* ``evaluate`` joins the stage rows of the requested questions, computes the combined scores
  and the metrics, and writes the reports and a joined ``scores.jsonl`` view (with
  ``combined``); it never writes into a stage file.
* ``DIR/run.lock`` refuses a second run on the same DIR while the first is alive.
* A run folder of the earlier single-file format (scores.jsonl + config.json) is converted by
  `convert_run` (``isograd qa --convert DIR``): its rows are split into stage files, nothing is
  recomputed, and its metrics regenerate as they were.

Seeds: sampling uses a per-question seed derived from ``seed`` and the question id, so the same
command gives the same rows, whatever was interrupted.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from .._choice import Choice
from . import stages as S
from .runfiles import (
    ALL_METHODS,
    QAConfig,
    RunMismatchError,
    parse_options,
    question_seed,
    read_rows,
    rewrite_rows,
)
from .score_pairs import score_file
from .stagefiles import (
    StageConfig,
    open_stage,
    read_config,
    reset_stage,
    rows_by_id,
    run_lock,
    stage_path,
)
from .stagefiles import (
    open_stage as _open,
)

__all__ = ["ALL_METHODS", "QAConfig", "RunMismatchError", "Stage", "convert_run",
           "parse_options", "print_table", "question_seed", "read_rows", "run_metrics",
           "run_qa", "score_file"]


class Stage(Choice):
    """Which stages of ``isograd qa`` to run."""

    ALL = "all"
    """Every stage, then evaluate."""
    GENERATE = "generate"
    """Greedy answers (MC1: the options' pick and its scores)."""
    GRADE = "grade"
    """Correctness of each answer."""
    SCORE = "score"
    """Gradient scores (epistemic, aleatoric) of each answer."""
    TRACE = "trace"
    """The per-token profile of each answer (with ``trace``)."""
    BASELINES = "baselines"
    """The requested baselines (and the samples they share)."""
    EVALUATE = "evaluate"
    """Metrics and reports from the stage files."""


_SAMPLING_DEFAULTS = ("naive_entropy", "semantic_entropy")


def _baselines(cfg: QAConfig) -> dict[str, Any]:
    from .baselines import make_baseline

    out = {}
    for m in cfg.methods:
        opts = dict(cfg.baseline_options.get(m, {}))
        if m in _SAMPLING_DEFAULTS:
            opts.setdefault("k", cfg.k)
            opts.setdefault("temperature", cfg.temperature)
            opts.setdefault("max_new_tokens", cfg.max_new_tokens)
            opts.setdefault("seed", cfg.seed)
        out[m] = make_baseline(m, **opts)
    return out


def _baseline_options(b: Any) -> dict[str, Any]:
    import dataclasses

    return json.loads(json.dumps(dataclasses.asdict(b), default=str))


def stage_configs(cfg: QAConfig, baselines: dict[str, Any]) -> dict[str, StageConfig]:
    """The config of every stage of a run with options `cfg`, in dependency order."""
    gen = StageConfig("generate", {k: getattr(cfg, k) for k in (
        "model", "dataset", "data", "prompt", "max_new_tokens", "dtype", "device")}, {})
    up = {"generate": gen.fingerprint}
    score_opts: dict[str, Any] = {"prediction": cfg.prediction, "alternatives": cfg.alternatives,
                                  "norm_method": cfg.norm_method}
    # the signal options enter only when not at their defaults: runs made before they existed
    # were scored under those defaults and keep their fingerprint
    default = QAConfig()
    score_opts.update({k: getattr(cfg, k) for k in ("layer_scale", "last_layers")
                       if getattr(cfg, k) != getattr(default, k)})
    out = {"generate": gen,
           "grade": StageConfig("grade", {"judge": cfg.judge}, up),
           "score": StageConfig("score", score_opts, up)}
    if cfg.trace:
        out["trace"] = StageConfig("trace", {"norm_method": cfg.norm_method}, up)
    if any(b.needs_samples for b in baselines.values()):
        out["samples"] = StageConfig("samples", {"k": cfg.k, "temperature": cfg.temperature,
                                                 "max_new_tokens": cfg.max_new_tokens,
                                                 "seed": cfg.seed}, up)
    for m, b in baselines.items():
        bup = {**up, "samples": out["samples"].fingerprint} if b.needs_samples else up
        out[f"baseline-{m}"] = StageConfig(f"baseline-{m}", _baseline_options(b), bup)
    return out


def _dependents(name: str, out: Path) -> list[str]:
    """Stages in `out` that read stage `name` (directly or not), from their recorded configs."""
    found, frontier = [], [name]
    others = sorted(p.name[:-len(".config.json")] for p in out.glob("*.config.json"))
    while frontier:
        cur = frontier.pop()
        for o in others:
            c = read_config(out, o)
            if c is not None and cur in c.upstream and o not in found:
                found.append(o)
                frontier.append(o)
    return found


_SINGLE_STAGES = ("generate", "grade", "score", "trace", "samples")  # one file each


def _force(out: Path, names: Sequence[str], configs: dict[str, StageConfig]) -> None:
    """Redo the named stages ("baselines" = every baseline; a method name = its baseline):
    delete their rows and those of every stage that reads them."""
    for n in names:
        if n == "baselines":
            targets = [s for s in configs if s.startswith("baseline-")]
        elif n in _SINGLE_STAGES:
            targets = [n]
        elif f"baseline-{n}" in configs:
            targets = [f"baseline-{n}"]
        else:
            allowed = [*_SINGLE_STAGES, "baselines",
                       *(s[len("baseline-"):] for s in configs if s.startswith("baseline-"))]
            raise ValueError(f"--force-stage {n!r}: allowed: {', '.join(allowed)}")
        for t in targets:
            for s in [t, *_dependents(t, out)]:
                reset_stage(out, s)


def _check_score(out: Path, new: StageConfig) -> str:
    """Open the score stage; return the prediction its rows are computed with.

    Another ``prediction`` is not a mismatch when the rows hold it (module docstring).
    """
    old = read_config(out, "score")
    open_stage(out, new, ignore=("prediction",))
    if old is None:
        return new.options["prediction"]
    have, want = old.options["prediction"], new.options["prediction"]
    if have != want and not ({have, want} <= {"sequence", "geometric"} or old.options["alternatives"]):
        raise RunMismatchError(
            f"{out}: the score stage was run with prediction={have!r} and its rows lack "
            f"{want!r} (first_token needs --alternatives); pass --force-stage score to redo it")
    return have


class _Model:
    """The model, loaded on first use (a run whose stages are all done loads nothing)."""

    def __init__(self, cfg: QAConfig, loaded: tuple[Any, Any] | None, batch_size: int,
                 load_options: dict[str, Any] | None, device: str):
        self.cfg, self.loaded, self.batch_size, self._env = cfg, loaded, batch_size, None
        self.load_options, self.device = dict(load_options or {}), device

    def env(self, cfg: QAConfig | None = None) -> S.Env:
        if self._env is None:
            import torch

            from ..lm import load_model

            m, tok = self.loaded or load_model(self.cfg.model, dtype=self.cfg.dtype,
                                               device=self.device, **self.load_options)
            torch.manual_seed(self.cfg.seed)
            self._env = S.Env(model=m, tokenizer=tok, cfg=self.cfg, batch_size=self.batch_size)
        return replace(self._env, cfg=cfg) if cfg is not None else self._env


def _need(out: Path, stage: str, questions: Sequence[Any]) -> dict[str, dict[str, Any]]:
    rows = rows_by_id(out, stage)
    missing = [q.id for q in questions if q.id not in rows]
    if missing:
        raise RunMismatchError(f"{out}: {len(missing)} question(s) lack {stage} rows (e.g. "
                               f"{missing[0]}); run --stage {stage.split('-')[0]} first")
    return rows


def _legacy(out: Path) -> bool:
    return (out / "scores.jsonl").exists() and not (out / "generate.config.json").exists()


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
    trace: bool = False,
    layer_scale: str = "weight-variance",
    last_layers: int = 5,
    judge: str = "auto",
    baseline_options: dict[str, dict[str, Any]] | None = None,
    stage: str = "all",
    force_stages: Sequence[str] = (),
    batch_size: int = 1,
    subset: int | None = None,
    trace_subset: int | None = None,
    progress: bool = True,
    command: str | None = None,
    loaded: tuple[Any, Any] | None = None,
    threads: int | None = None,
) -> dict[str, Any] | None:
    """Run the QA evaluation into `out` (staged, resumable) and return the metrics dict.

    Args:
        out: output directory (stage files, metrics.json, report.md, roc.png, scores.jsonl).
        model: model name or path (`load_model`).
        dataset: "truthfulqa-gen" | "truthfulqa-mc1" | "triviaqa" | "nq-open".
        data: dataset file or folder (`load_dataset`'s ``data``).
        limit: the first `limit` questions in file order (None: all).
        methods: baselines to run besides the gradient scores (names of
            ``isograd.qa.baselines.BASELINES``).
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
            trust_remote_code); not recorded in the stage configs.
        norm_method: gradient-norm engine ("auto", "loop", "ghost").
        trace: also score every answer token (the ``trace`` stage, `isograd.lm.token_trace`):
            the methods ``epistemic_token_max``/``_mean`` and each row's profile; about T times
            the score.
        layer_scale: the rule of ``epistemic_layer_scaled`` ("weight-variance", "fan-in").
            The paper's ``epistemic`` stays isotropic; the layer-scaled term is its own method.
        last_layers: k of ``epistemic_last_layers`` (default 5).
        judge: grading rule (`grade`'s ``judge``).
        baseline_options: per-method extra options for `make_baseline`.
        stage: which stage to run (`Stage`); "all" runs every stage, then evaluate.
        force_stages: stages to redo ("generate", "grade", "score", "samples", "baselines" or a
            baseline's name), with every stage that reads them.
        batch_size: questions per generation batch and per forward+backward of the score stage
            (rows equal those of batch size 1 up to float rounding).
        subset: run the trace, samples and baselines stages on the first `subset` questions
            only (None: all); the other stages and the gradient scores cover every question,
            and each method is evaluated on the questions that have it.
        trace_subset: the trace stage's own `subset` (None: `subset`); needs `trace`.
        progress: show a tqdm progress bar per stage.
        command: the command line, recorded in metrics.json / report.md.
        loaded: an already loaded ``(model, tokenizer)`` (tests, notebooks).
        threads: torch CPU threads for this call (None: torch's default). The thread count can
            change float rounding (~1e-6 relative), so keep it fixed within a run.

    Returns:
        The metrics dict written to metrics.json, or None when `stage` is not "all"/"evaluate".
    """
    import contextlib

    import torch

    from .. import distributed as dd
    from ..layer_scale import LayerScale
    from ..lm import Prediction, PromptStyle
    from .datasets import load_dataset

    Prediction.parse(prediction)
    if last_layers < 1:
        raise ValueError(f"last_layers must be >= 1, got {last_layers}")
    for name, v in (("subset", subset), ("trace_subset", trace_subset)):
        if v is not None and v < 1:
            raise ValueError(f"{name} must be >= 1, got {v}")
    if trace_subset is not None and not trace:
        raise ValueError("trace_subset (--trace-subset) is the trace stage's subset: it needs trace=True (--trace)")
    which = Stage.parse(stage)
    if which == Stage.TRACE and not trace:
        raise ValueError("stage 'trace' runs only with trace=True (--trace)")
    prompt = PromptStyle.parse(prompt).value
    cfg = QAConfig(model=model, dataset=dataset, data=str(data) if data else None,
                   methods=tuple(methods), prediction=prediction, prompt=prompt,
                   alternatives=alternatives,
                   seed=seed, max_new_tokens=max_new_tokens, k=k, temperature=temperature,
                   dtype=dtype, device=device, norm_method=norm_method, judge=judge,
                   trace=trace, layer_scale=LayerScale.parse(layer_scale).value,
                   last_layers=last_layers,
                   baseline_options=dict(baseline_options or {}), subset=subset,
                   trace_subset=trace_subset)
    baselines = _baselines(cfg)  # unknown method names fail before anything is written
    questions = load_dataset(dataset, data=data, limit=limit)
    outp = Path(out)
    saved_threads = torch.get_num_threads()
    rank = dd.setup(device)  # under torchrun: this process's share (`isograd.distributed`)
    dd.on_peer_failure(rank, outp / "generate.jsonl")
    # rank 0 holds the lock and writes the configs and the report; every rank computes rows
    with run_lock(outp) if rank.main else contextlib.nullcontext():
        if _legacy(outp):
            raise RunMismatchError(
                f"{outp} holds a run in the earlier single-file format (scores.jsonl); convert "
                f"it first with `isograd qa --convert {outp}` (nothing is recomputed)")
        configs = stage_configs(cfg, baselines)
        if rank.main:
            _force(outp, force_stages, configs)
        if threads:
            torch.set_num_threads(threads)
        try:
            _run_stages(outp, cfg, which, configs, baselines, questions,
                        _Model(cfg, loaded, batch_size, load_options,
                               dd.device_for(cfg.device, rank)), batch_size, progress, rank)
        finally:
            torch.set_num_threads(saved_threads)
        metrics = None
        if which in (Stage.ALL, Stage.EVALUATE) and rank.main:
            score_cfg = read_config(outp, "score")
            metrics = evaluate_run(outp, cfg.to_json(), [q.id for q in questions],
                                   score_prediction=score_cfg.options["prediction"]
                                   if score_cfg else cfg.prediction, command=command)
        dd.barrier(rank)  # the job ends with the report written
        return metrics


def _run_stages(out: Path, cfg: QAConfig, which: Stage, configs: dict[str, StageConfig],
                baselines: dict[str, Any], questions: Sequence[Any], lazy: _Model,
                batch_size: int, progress: bool, rank: Any) -> None:
    """Run the stages `which` selects, each over the questions it lacks (under torchrun each
    rank computes its share into part files, which rank 0 merges: `distributed.run_rows`)."""
    from .. import distributed as dd

    def runs(s: Stage) -> bool:
        return which in (Stage.ALL, s)

    def key(q: Any) -> str:
        return q.id

    def go(name: str, compute: Any, bs: int = 1) -> None:
        # the costly stages cover the first questions only (`run_qa`'s ``subset``)
        dd.run_rows(stage_path(out, name), questions[:cfg.subset_of(name)], compute, key=key,
                    batch_size=bs, desc=f"{name} {cfg.dataset}", progress=progress)

    def open_stage(out: Path, new: StageConfig, **kw: Any) -> None:
        # rank 0 records the config first; the others then find it and check against it
        if rank.main:
            _open(out, new, **kw)
        dd.barrier(rank)
        if not rank.main:
            _open(out, new, **kw)

    if runs(Stage.GENERATE):
        open_stage(out, configs["generate"])
        go("generate", lambda qs: S.generate_rows(lazy.env(), qs), batch_size)
    if which == Stage.EVALUATE:
        return
    gen = _need(out, "generate", questions)
    if runs(Stage.GRADE):
        open_stage(out, configs["grade"])
        go("grade", lambda qs: S.grade_rows(lazy.env(), qs, gen))
    if runs(Stage.SCORE):
        pred = _check_score(out, configs["score"]) if rank.main else ""
        dd.barrier(rank)
        if not rank.main:
            pred = _check_score(out, configs["score"])
        go("score", lambda qs: S.score_rows(lazy.env(replace(cfg, prediction=pred)), qs, gen),
           batch_size)
    if runs(Stage.TRACE) and "trace" in configs:
        open_stage(out, configs["trace"])
        go("trace", lambda qs: S.trace_rows(lazy.env(), qs, gen), batch_size)
    if runs(Stage.BASELINES):
        samples = None
        if "samples" in configs:
            open_stage(out, configs["samples"])
            go("samples", lambda qs: S.sample_rows(lazy.env(), qs, gen))
            samples = rows_by_id(out, "samples")
        for m, b in baselines.items():
            open_stage(out, configs[f"baseline-{m}"])
            go(f"baseline-{m}",
               lambda qs, m=m, b=b: S.baseline_rows(lazy.env(), m, b, qs, gen, samples))


def run_methods(rows: Sequence[dict[str, Any]], config: dict[str, Any]) -> dict[str, bool]:
    """Method name -> higher_is_uncertain of a run: the paper's two terms, the other signals of
    the same pass that the rows hold (`isograd.evaluate.paper.SIGNALS`: runs made before them
    lack them), then the run's baselines."""
    from ..evaluate.paper import SIGNALS
    from .baselines import BASELINES

    methods = {"epistemic": True, "aleatoric": True}
    methods.update({m: True for m in SIGNALS if any(r.get(m) is not None for r in rows)})
    methods.update({m: BASELINES[m].higher_is_uncertain for m in config["methods"]})
    return methods


def run_metrics(rows: Sequence[dict[str, Any]], config: dict[str, Any], *,
                command: str | None = None) -> dict[str, Any]:
    """The metrics table of a run's rows under its `config` (a ``QAConfig.to_json()`` dict,
    recorded as given): the gradient terms, each baseline in ``config["methods"]``, their
    combinations and the AUROC under each definition of p. Pure: reads and writes nothing."""
    from ..evaluate import alternative_metrics, evaluate
    from ..lm.score import Prediction

    seed = config.get("seed", 0)
    methods = run_methods(rows, config)
    graders = sorted({str(r["grade_method"]) for r in rows if r.get("grade_method")})
    extra = {"config": dict(config),
             "predictions": alternative_metrics(rows, config["prediction"],
                                                [p.value for p in Prediction], seed=seed),
             "grading": f"grader {', '.join(graders)}" if graders else None}
    return evaluate(rows, methods, seed=seed, model=config.get("model"),
                    dataset=config.get("dataset"), command=command, extra=extra)


def evaluate_run(out: Path, config: dict[str, Any], ids: Sequence[str], *,
                 score_prediction: str, command: str | None = None) -> dict[str, Any]:
    """The evaluate stage: join the stage rows of `ids`, compute the metrics, write
    metrics.json, report.md, roc.png, config.json and the joined view scores.jsonl."""
    from ..evaluate import score_columns, write_report

    base = [f"baseline-{m}" for m in config["methods"]]
    stages = ["generate", "grade", "score", *(["trace"] if config.get("trace") else []), *base]
    parts = {s: rows_by_id(out, s) for s in stages}
    samples = rows_by_id(out, "samples")
    cfg = QAConfig(**{**QAConfig().to_json(), **config, "methods": tuple(config["methods"])})
    covers = {s: set(ids[:cfg.subset_of(s)]) for s in stages}  # `run_qa`'s ``subset``
    rows = []
    for qid in ids:
        need = [s for s in stages if qid in covers[s]]
        lack = [s for s in need if qid not in parts[s]]
        if lack:
            raise RunMismatchError(f"{out}: question {qid} lacks {', '.join(lack)} rows; run "
                                   "those stages first (--stage all does)")
        row = S.join_row(parts["generate"][qid], parts["grade"][qid], parts["score"][qid],
                         samples.get(qid), [parts[b][qid] for b in base if qid in parts[b]],
                         trace=parts["trace"].get(qid) if "trace" in parts else None)
        rows.append(S.headline(row, score_prediction, config["prediction"]))
    metrics = run_metrics(rows, config, command=command)
    _, cols, _, _ = score_columns(rows, run_methods(rows, config), seed=config.get("seed", 0))
    view = [{**r, "combined": float(c)} for r, c in zip(rows, cols["combined"])]
    rewrite_rows(out / "scores.jsonl", view)
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    write_report(out, metrics, rows)
    return metrics


_GEN_KEYS = ("question", "answer", "empty_answer", "cost_generate_s", "pick", "label",
             "option_logliks")
_GRADE_KEYS = ("correct", "grade_score", "grade_method", "grade_f1", "correct_f1")


def convert_run(out: str | Path) -> dict[str, Any]:
    """Convert a run folder of the earlier single-file format (scores.jsonl + config.json) into
    stage files, then evaluate it: nothing is recomputed and metrics.json regenerates as before.

    The converted generate rows lack the prompt and token ids, which were not recorded: a stage
    that needs them (a new baseline, another score) asks for ``--force-stage generate``.

    Returns:
        The metrics dict written to metrics.json.
    """
    outp = Path(out)
    if not _legacy(outp):
        raise RunMismatchError(f"{outp}: no run of the earlier format to convert (it needs "
                               "scores.jsonl and config.json and no generate.config.json)")
    raw_text = (outp / "config.json").read_text(encoding="utf-8")
    raw = json.loads(raw_text)
    cfg = QAConfig(**{**QAConfig().to_json(), **raw, "methods": tuple(raw["methods"])})
    old_metrics = outp / "metrics.json"
    old = json.loads(old_metrics.read_text(encoding="utf-8")) if old_metrics.exists() else {}
    # the metrics record the run's config as its last evaluation did (it may list defaults
    # that config.json, written earlier, lacks)
    recorded, command = old.get("config", raw), old.get("command")
    with run_lock(outp):
        rows = read_rows(outp / "scores.jsonl")
        configs = stage_configs(cfg, _baselines(cfg))
        split: dict[str, list[dict[str, Any]]] = {s: [] for s in configs}
        for r in rows:
            own = {"id": r["id"]}
            base = {m: {**own, **{k: r[k] for k in (m, f"cost_{m}_s", f"cost_{m}_fwd") if k in r}}
                    for m in cfg.methods}
            taken = {"id", "combined", "samples", "cost_samples_s", *_GEN_KEYS, *_GRADE_KEYS,
                     *(k for b in base.values() for k in b)}
            split["generate"].append({**own, **{k: r[k] for k in _GEN_KEYS if k in r}})
            split["grade"].append({**own, **{k: r[k] for k in _GRADE_KEYS if k in r}})
            split["score"].append({**own, **{k: v for k, v in r.items() if k not in taken}})
            if "samples" in configs:
                split["samples"].append({**own, "samples": [{"text": t} for t in r["samples"]],
                                         "cost_samples_s": r["cost_samples_s"]})
            for m in cfg.methods:
                split[f"baseline-{m}"].append(base[m])
        for s, c in configs.items():
            open_stage(outp, c)
            rewrite_rows(stage_path(outp, s), split[s])
        metrics = evaluate_run(outp, recorded, [r["id"] for r in rows],
                               score_prediction=cfg.prediction, command=command)
        (outp / "config.json").write_text(raw_text, encoding="utf-8")  # as it was
        return metrics


def print_table(metrics: dict[str, Any]) -> None:
    """Print the report's AUROC table (as report.md renders it)."""
    from ..evaluate import render_markdown

    print(render_markdown(metrics))
