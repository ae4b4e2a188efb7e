"""The QA pipeline behind ``isograd qa``: generate -> grade -> score -> trace -> baselines -> evaluate.

Each stage writes its own ``DIR/<stage>.jsonl`` (one row per question id) and
``DIR/<stage>.config.json`` (the options that determine its rows and the fingerprints of the
stages it reads). This module runs the stages; what each computes is in `isograd.qa.stages`,
the stage table and its rules in `isograd.qa.stagerules`, the options in `isograd.qa.options`,
the evaluate stage in `isograd.qa.evaluation`, the files and the one row loop in
`isograd.rows`.

* ``subset=N``: the costly per-question stages (trace, samples, baselines) run on the first N
  questions only, the others on all (``trace_subset`` sets the trace's own N, for its ~T times
  the score's cost); each method is then evaluated on the questions that have it, and the report
  gives every method's n. N is no stage option: a larger N later computes only the rows the
  first run lacks. ``method_subsets={"p_true": 500, ...}`` gives a costly baseline its own N
  (the samples cover the largest N of the methods that read them); the others, MSP and mean
  token entropy always among them, then cover every question.

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
* ``detector``: a detector file (``isograd fit-detector``) adds each row's ``p_error`` and
  ``abstain`` and the detector's section of the report; on a finished run that is all it
  computes (every stage's rows are there: no model is loaded, no gradient recomputed).
* ``DIR/run.lock`` refuses a second run on the same DIR while the first is alive.
* A run folder of the earlier single-file format (scores.jsonl + config.json) is converted by
  `isograd.qa.legacy.convert_run` (``isograd qa --convert DIR``): its rows are split into stage files, nothing is
  recomputed, and its metrics regenerate as they were.

Seeds: sampling uses a per-question seed derived from ``seed`` and the question id, so the same
command gives the same rows, whatever was interrupted.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..rows.lock import run_lock
from ..rows.ranks import barrier
from ..rows.runner import run_rows
from ..rows.stagefiles import RunMismatchError, StageConfig, read_config, rows_by_id, stage_path
from ..rows.stagefiles import open_stage as open_config
from . import stages as S
from .evaluation import evaluate_run, recorded_prediction
from .legacy import is_legacy
from .options import QA, QAConfig, Stage
from .stagerules import (
    check_score,
    force,
    legacy_row_matches,
    make_baselines,
    row_fingerprint,
    stage_configs,
)

__all__ = ["run_qa"]


def run_qa(out: str | Path, *, loaded: tuple[Any, Any] | None = None,
           command: str | None = None, **options: Any) -> dict[str, Any] | None:
    """Run the QA evaluation into `out` (staged, resumable) and return the metrics dict.

    Args:
        out: output directory (stage files, metrics.json, report.md, roc.png, scores.jsonl).
        loaded: an already loaded ``(model, tokenizer)`` (tests, notebooks).
        command: the command line, recorded in metrics.json / report.md.
        **options: the options of `isograd.qa.options.QA` (each declared there once, with its
            default and help; ``isograd qa --help`` lists them): e.g. ``dataset``, ``model``,
            ``methods``, ``prediction``, ``stage``, ``force_stages``, ``batch_size``,
            ``subset``. The thread count (``threads``) can change float rounding (~1e-6
            relative), so keep it fixed within a run; the load options (device_map, revision,
            attn_implementation, trust_remote_code) are not recorded in the stage configs.

    Returns:
        The metrics dict written to metrics.json, or None when ``stage`` is not "all"/"evaluate".
    """
    import contextlib

    import torch

    from ..lm.options import load_options
    from ..rows import ranks
    from .datasets import load_dataset
    from .grading import check_judge

    o = QA.resolve(options)
    if o["trace_subset"] is not None and not o["trace"]:
        raise ValueError("trace_subset (--trace-subset) is the trace stage's subset: it needs "
                         "trace=True (--trace)")
    which = Stage.parse(o["stage"])
    if which == Stage.TRACE and not o["trace"]:
        raise ValueError("stage 'trace' runs only with trace=True (--trace)")
    load = load_options(o, check_device_=False)
    recorded = {k: v for k, v in o.items() if k in QAConfig.__dataclass_fields__}
    cfg = QAConfig(**{**recorded, "data": str(o["data"]) if o["data"] else None})
    baselines = make_baselines(cfg)  # unknown method names fail before anything is written
    unused = sorted(set(cfg.method_subsets) - set(cfg.methods))
    if unused:
        raise ValueError(f"method_subsets (--method-subset) names {', '.join(unused)}, which "
                         "methods (--methods) does not run")
    detector = None
    if o["detector"]:  # a bad file or another model fails before anything is written
        from ..detect import load_detector

        detector = load_detector(o["detector"], model_id=cfg.model, revision=o["revision"],
                                 allow_model_mismatch=o["allow_model_mismatch"])
    if which in (Stage.ALL, Stage.GRADE):
        check_judge(cfg.judge)  # an unconfigured LLM judge fails before generation
    questions = load_dataset(cfg.dataset, data=o["data"], limit=o["limit"])
    outp = Path(out)
    saved_threads = torch.get_num_threads()
    rank = ranks.setup(cfg.device)  # under torchrun: this process's share
    ranks.on_peer_failure(rank, outp / "generate.jsonl")
    lazy = LazyModel(cfg, loaded, o["batch_size"], load, ranks.device_for(cfg.device, rank))
    mc = bool(questions) and questions[0].label is not None
    configs = stage_configs(cfg, baselines, multiple_choice=mc)
    old = read_config(outp, "generate")
    if (which in (Stage.ALL, Stage.GENERATE) and not is_legacy(outp)
            and (old is None or old.fingerprint == configs["generate"].fingerprint)):
        # a prompt beyond the model's context is refused before any file is touched (a run
        # of other options is refused by its recorded config instead, without a model)
        done = rows_by_id(outp, "generate")
        todo = [q for q in questions if q.id not in done]
        if todo:
            S.check_prompts(lazy.env(), todo)
    # rank 0 holds the lock and writes the configs and the report; every rank computes rows
    with run_lock(outp) if rank.main else contextlib.nullcontext():
        if is_legacy(outp):
            raise RunMismatchError(
                f"{outp} holds a run in the earlier single-file format (scores.jsonl); convert "
                f"it first with `isograd qa --convert {outp}` (nothing is recomputed)")
        if rank.main:
            force(outp, o["force_stages"], configs)
        if o["threads"]:
            torch.set_num_threads(o["threads"])
        try:
            run_stages(outp, cfg, which, configs, baselines, questions, lazy,
                       o["batch_size"], o["progress"], rank)
        finally:
            torch.set_num_threads(saved_threads)
        metrics = None
        if which in (Stage.ALL, Stage.EVALUATE) and rank.main:
            metrics = evaluate_run(outp, cfg.to_json(), [q.id for q in questions],
                                   score_prediction=recorded_prediction(outp, cfg.to_json()),
                                   command=command, detector=detector)
        barrier(rank)  # the job ends with the report written
        return metrics


run_qa.__signature__ = QA.signature(  # type: ignore[attr-defined]
    inspect.Parameter("out", inspect.Parameter.POSITIONAL_OR_KEYWORD),
    inspect.Parameter("loaded", inspect.Parameter.KEYWORD_ONLY, default=None),
    inspect.Parameter("command", inspect.Parameter.KEYWORD_ONLY, default=None))


class LazyModel:
    """The model, loaded on first use (a run whose stages are all done loads nothing)."""

    def __init__(self, cfg: Any, loaded: tuple[Any, Any] | None, batch_size: int,
                 load_options: dict[str, Any], device: str):
        self.cfg, self.loaded, self.batch_size, self.loaded_env = cfg, loaded, batch_size, None
        self.load_options, self.device = load_options, device

    def env(self, cfg: Any = None) -> S.Env:
        """The loaded model with the run's options (`cfg`: other options for one stage)."""
        if self.loaded_env is None:
            import torch

            from ..lm import load_model

            m, tok = self.loaded or load_model(self.cfg.model, dtype=self.cfg.dtype,
                                               device=self.device, **self.load_options)
            torch.manual_seed(self.cfg.seed)
            base_model_hint(tok, self.cfg.model, self.cfg.prompt)
            self.loaded_env = S.Env(model=m, tokenizer=tok, cfg=self.cfg, batch_size=self.batch_size)
        return replace(self.loaded_env, cfg=cfg) if cfg is not None else self.loaded_env


def base_model_hint(tokenizer: Any, model: str, prompt: Any) -> None:
    """Warn when a model without a chat template (a base model) is asked in an instruction
    prompt style: it still runs, as plain text, but ``--prompt base`` is the style for it."""
    import warnings

    from ..lm.prompts import PromptStyle, has_chat_template

    if not has_chat_template(tokenizer) and PromptStyle.parse(prompt) is not PromptStyle.BASE:
        warnings.warn(f"{model} has no chat template (a base model): the "
                      f"{PromptStyle.parse(prompt).value!r} prompt goes to it as plain text; "
                      "--prompt base (few-shot 'Q: ... A:') is the style for base models",
                      stacklevel=2)


def need_rows(out: Path, stage: str, questions: Sequence[Any]) -> dict[str, dict[str, Any]]:
    """The rows of `stage` by id, refusing when a question lacks its row."""
    rows = rows_by_id(out, stage)
    missing = [q.id for q in questions if q.id not in rows]
    if missing:
        raise RunMismatchError(f"{out}: {len(missing)} question(s) lack {stage} rows (e.g. "
                               f"{missing[0]}); run --stage {stage.split('-')[0]} first")
    return rows


def run_stages(out: Path, cfg: Any, which: Stage, configs: dict[str, StageConfig],
               baselines: dict[str, Any], questions: Sequence[Any], lazy: LazyModel,
               batch_size: int, progress: bool, rank: Any) -> None:
    """Run the stages `which` selects, each over the questions it lacks (under torchrun each
    rank computes its share into part files, which rank 0 merges: `isograd.rows.runner`)."""

    def runs(s: Stage) -> bool:
        return which in (Stage.ALL, s)

    def key(q: Any) -> str:
        return q.id

    samplers = [m for m, b in baselines.items() if b.needs_samples]
    gen: dict[str, dict[str, Any]] = {}  # the generate rows, once that stage is done

    def go(name: str, compute: Any, bs: int = 1) -> None:
        # the costly stages cover the first questions only (``subset``, ``method_subsets``)
        c = configs[name]
        run_rows(stage_path(out, name), questions[:cfg.subset_of(name, samplers)], compute,
                 key=key, batch_size=bs, desc=f"{name} {cfg.dataset}", progress=progress,
                 fingerprint=lambda q: row_fingerprint(c, q, gen.get(q.id)),
                 legacy=lambda q, row: legacy_row_matches(name, q, row, gen.get(q.id)))

    def open_stage(out: Path, new: StageConfig, **kw: Any) -> None:
        # rank 0 records the config first; the others then find it and check against it
        if rank.main:
            open_config(out, new, **kw)
        barrier(rank)
        if not rank.main:
            open_config(out, new, **kw)

    if runs(Stage.GENERATE):
        open_stage(out, configs["generate"])
        go("generate", lambda qs: S.generate_rows(lazy.env(), qs), batch_size)
    if which == Stage.EVALUATE:
        return
    gen.update(need_rows(out, "generate", questions))
    if runs(Stage.GRADE):
        open_stage(out, configs["grade"])
        go("grade", lambda qs: S.grade_rows(lazy.env(), qs, gen))
    if runs(Stage.SCORE):
        pred = check_score(out, configs["score"]) if rank.main else ""
        barrier(rank)
        if not rank.main:
            pred = check_score(out, configs["score"])
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
