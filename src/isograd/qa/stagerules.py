"""The rules of a staged ``isograd qa`` run: which stages a run has, what each stage's config
(fingerprint) holds, what ``--force-stage`` redoes, and when another ``prediction`` is no
mismatch.

| stage | reads | options (from `isograd.qa.options.QA`: each entry names its stages) | file |
| --- | --- | --- | --- |
| generate | the dataset | model, dataset, data, prompt, max_new_tokens, dtype, device (MC1: + norm_method) | generate.jsonl |
| grade | generate | judge | grade.jsonl |
| score | generate | prediction, alternatives, norm_method, layer_scale, last_layers | score.jsonl |
| trace | generate | norm_method | trace.jsonl (only with ``trace``) |
| samples | generate | k, temperature, max_new_tokens, seed | samples.jsonl (sampling methods) |
| baseline-NAME | generate (+ samples) | the method's options | baseline-NAME.jsonl |

Every row also carries the fingerprint of its own input (``input_fp``, `row_fingerprint`): the
question (generate, grade: its references too) or the generate row it reads, with the stage's
options; a rerun recomputes a row whose input changed (`isograd.rows.runner.run_rows`). Rows
written before ``input_fp`` existed (`legacy_row_matches`): a generate row is checked by the
question text it stores, a later stage's row is trusted while its generate row is such a row
too (it was then not recomputed since).

An option enters a fingerprint unless it equals the value runs made before it entered that
fingerprint used (`isograd.options.Option.legacy`), so old runs resume and a changed default
never resumes old rows under its new meaning.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..rows.files import digest
from ..rows.runner import FINGERPRINT
from ..rows.stagefiles import (
    RunMismatchError,
    StageConfig,
    open_stage,
    read_config,
    reset_stage,
)
from .options import QA

SAMPLING_METHODS = ("naive_entropy", "semantic_entropy")
"""The baselines that take the run's sampling options (k, temperature, ...) by default."""

SINGLE_STAGES = ("generate", "grade", "score", "trace", "samples")
"""The stages of one file each (``--force-stage`` names them)."""


def make_baselines(cfg: Any) -> dict[str, Any]:
    """The baseline objects of a run with options `cfg` (a `QAConfig`), by method name."""
    from .baselines import make_baseline

    out = {}
    for m in cfg.methods:
        opts = dict(cfg.baseline_options.get(m, {}))
        if m in SAMPLING_METHODS:
            for k in ("k", "temperature", "max_new_tokens", "seed"):
                opts.setdefault(k, getattr(cfg, k))
        out[m] = make_baseline(m, **opts)
    return out


def baseline_options(b: Any) -> dict[str, Any]:
    """A baseline object's options as JSON values (its stage's config)."""
    return json.loads(json.dumps(dataclasses.asdict(b), default=str))


def stage_configs(cfg: Any, baselines: dict[str, Any], *,
                  multiple_choice: bool = False) -> dict[str, StageConfig]:
    """The config of every stage of a run with options `cfg`, in dependency order.

    Args:
        cfg: the run's options (a `QAConfig`).
        baselines: the run's baseline objects (`make_baselines`).
        multiple_choice: the dataset is multiple choice (its generate stage scores the pick).
    """
    values = dataclasses.asdict(cfg)

    def config(stage: str, up: dict[str, str], *also: str) -> StageConfig:
        opts = QA.stage_options(stage, values)
        for extra in also:
            opts.update(QA.stage_options(extra, values))
        return StageConfig(stage, opts, up)

    gen = config("generate", {}, *(["mc-generate"] if multiple_choice else []))
    up = {"generate": gen.fingerprint}
    out = {"generate": gen, "grade": config("grade", up), "score": config("score", up)}
    if cfg.trace:
        out["trace"] = config("trace", up)
    if any(b.needs_samples for b in baselines.values()):
        out["samples"] = config("samples", up)
    for m, b in baselines.items():
        bup = {**up, "samples": out["samples"].fingerprint} if b.needs_samples else up
        out[f"baseline-{m}"] = StageConfig(f"baseline-{m}", baseline_options(b), bup)
    return out


def dependents(name: str, out: Path) -> list[str]:
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


def force(out: Path, names: Sequence[str], configs: dict[str, StageConfig]) -> None:
    """Redo the named stages ("baselines" = every baseline; a method name = its baseline):
    delete their rows and those of every stage that reads them."""
    for n in names:
        if n == "baselines":
            targets = [s for s in configs if s.startswith("baseline-")]
        elif n in SINGLE_STAGES:
            targets = [n]
        elif f"baseline-{n}" in configs:
            targets = [f"baseline-{n}"]
        else:
            allowed = [*SINGLE_STAGES, "baselines",
                       *(s[len("baseline-"):] for s in configs if s.startswith("baseline-"))]
            raise ValueError(f"--force-stage {n!r}: allowed: {', '.join(allowed)}")
        for t in targets:
            for s in [t, *dependents(t, out)]:
                reset_stage(out, s)


def check_score(out: Path, new: StageConfig) -> str:
    """Open the score stage; return the prediction its rows are computed with.

    Another ``prediction`` is no mismatch when the rows hold it: "sequence" and "geometric"
    always, "first_token" with ``alternatives``.
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


GENERATED = ("prompt", "answer", "token_ids", "pick")
"""The fields of a generate row that the later stages read as their input."""


def row_fingerprint(config: StageConfig, question: Any,
                    generated: dict[str, Any] | None = None) -> str:
    """The fingerprint of one row's input: its question (or the generate row `generated` it
    reads) and the stage's options (but ``prediction``: score rows hold every definition)."""
    options = {k: v for k, v in config.options.items()
               if not (config.stage == "score" and k == "prediction")}
    q = {k: getattr(question, k) for k in ("question", "answers", "incorrect", "options",
                                           "label")}
    value: dict[str, Any] = {"options": options, "question": q}
    if generated is not None:
        value["generate"] = {k: generated.get(k) for k in GENERATED}
    return digest(value)


def legacy_row_matches(stage: str, question: Any, row: dict[str, Any],
                       generated: dict[str, Any] | None = None) -> bool:
    """Whether a row without ``input_fp`` (written before it existed) is still its question's."""
    if stage == "generate":
        return row.get("question") == question.question
    return generated is not None and FINGERPRINT not in generated
