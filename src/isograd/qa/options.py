"""The options of ``isograd qa`` (`run_qa`) and ``isograd score`` (`score_file`), each declared
once (`isograd.options.Option`): the command lines, the Python signatures, the recorded run
config (`QAConfig`) and the stage fingerprints are all made from `QA` and `SCORE`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from .._choice import Choice
from ..lm.fsdp import Shard
from ..lm.options import LOAD, SCORING
from ..norms import parse_size
from ..options import Option, Options
from .grading import Judge

ALL_METHODS = ("p_true", "naive_entropy", "semantic_entropy", "msp", "mean_token_entropy")
"""The baselines ``isograd qa`` runs by default (names of ``isograd.qa.baselines.BASELINES``)."""


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


def method_names(value: str | Sequence[str]) -> tuple[str, ...]:
    """``all`` | ``none`` | a comma-separated list (or a sequence) of baselines, checked.

    Raises:
        ValueError: an unknown name (the allowed ones listed).
    """
    if isinstance(value, str):
        names = (list(ALL_METHODS) if value == "all" else [] if value == "none"
                 else [m.strip() for m in value.split(",") if m.strip()])
    else:
        names = list(value)
    unknown = [m for m in names if m not in ALL_METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {', '.join(map(repr, unknown))}; allowed: 'all', "
                         f"'none' or a comma-separated list of {', '.join(ALL_METHODS)}")
    return tuple(names)


def parse_options(items: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``["semantic_entropy.entailment=embedding", ...]`` -> ``{method: {key: value}}``.

    Values are read as JSON when they parse (numbers, true/false, null), else kept as text.
    """
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        method, dot, name = key.partition(".")
        if not (sep and dot and method and name):
            raise ValueError(f"baseline option {item!r} must look like METHOD.KEY=VALUE")
        try:
            v: Any = json.loads(value)
        except ValueError:
            v = value
        out.setdefault(method.strip(), {})[name.strip()] = v
    return out


CHEAP_METHODS = ("msp", "mean_token_entropy")
"""Baselines that cost at most one forward pass: no per-method subset, they cover every question
(beside the gradient scores) unless ``--subset`` is given."""


def memory_size(value: int | float | str) -> int:
    """``--memory-budget``'s bytes (`isograd.norms.parse_size`: 4e9, "4GiB", ...)."""
    return parse_size(value, "memory budget")


def method_subsets(value: str | dict[str, int] | None) -> dict[str, int]:
    """``"p_true=500,semantic_entropy=500"`` (or a dict) -> ``{method: N}``, checked.

    Raises:
        ValueError: an unknown or cheap method, or N not a positive integer.
    """
    if value is None:
        return {}
    if isinstance(value, str):
        pairs = [item.partition("=") for item in value.split(",") if item.strip()]
        if any(not sep for _, sep, _ in pairs):
            raise ValueError(f"{value!r} must look like METHOD=N,METHOD=N")
        items = [(k.strip(), v.strip()) for k, _, v in pairs]
    else:
        items = list(dict(value).items())
    out: dict[str, int] = {}
    costly = [m for m in ALL_METHODS if m not in CHEAP_METHODS]
    for m, n in items:
        if m not in costly:
            why = " (it always covers every question)" if m in CHEAP_METHODS else ""
            raise ValueError(f"no per-method subset for {m!r}{why}; allowed: {', '.join(costly)}")
        try:
            size = int(n)
        except (TypeError, ValueError):
            size = 0
        if isinstance(n, bool) or size < 1 or str(size) != str(n).strip():
            raise ValueError(f"{m}={n!r}: N must be a positive integer")
        out[m] = size
    return out


def comma_list(value: str | Sequence[str] | None) -> tuple[str, ...]:
    """"a, b" (or a sequence) -> ("a", "b")."""
    if value is None:
        return ()
    items = value.split(",") if isinstance(value, str) else value
    return tuple(s.strip() for s in items if s.strip())


_sampling = "(the sampling baselines)"

THREADS = Option("threads", None, "Torch CPU threads for the call (1 is fastest on a shared "
                 "machine; keep it fixed within a run: it can change float rounding).", type=int,
                 min=1)

DETECTOR = Options((
    Option("detector", None, "A detector file (isograd fit-detector): adds p_error and abstain "
           "to every row; on a finished run only these and the report are computed."),
    Option("allow_model_mismatch", False, "Apply a detector fitted on another model (the "
           "model check only; a missing feature still stops).", type=bool),
))
"""The detector options of ``isograd qa`` and ``isograd score``."""

# the order of the recorded options is that of a run's config.json
QA = Options((
    LOAD["model"],
    Option("dataset", "truthfulqa-gen", "truthfulqa-gen | truthfulqa-mc1 | triviaqa | "
           "triviaqa-150 | nq-open | arc-easy-train | arc-easy-validation | arc-easy-test, or "
           "the path of your own .jsonl/.csv (question + "
           "answers/answer, or question + choices + label).", stages=("generate",),
           recorded=True, cli_default=None),
    Option("data", None, "Another copy of a registered dataset: a file or folder (default: "
           "$ISOGRAD_DATA, else the packaged copy).", stages=("generate",), recorded=True),
    Option("limit", None, "Only the first N questions (file order).", type=int, min=1),
    Option("methods", ALL_METHODS, "Comma-separated baselines, 'all' or 'none'.",
           recorded=True, cli_default="all", parse=method_names,
           coerce=method_names),
    SCORING["prediction"],
    SCORING["prompt"],
    Option("alternatives", True, "Also record the other two predictions of p.", type=bool,
           stages=("score",), recorded=True),
    Option("seed", 0, "Seed of sampling and bootstrap.", type=int, stages=("samples",),
           recorded=True),
    Option("max_new_tokens", 24, "Cap on answer tokens (greedy and samples).", type=int, min=1,
           stages=("generate", "samples"), recorded=True),
    Option("k", 5, f"Samples per question {_sampling}.", type=int, min=1, stages=("samples",),
           recorded=True),
    Option("temperature", 1.0, f"Sampling temperature {_sampling}.", type=float, positive=True,
           stages=("samples",), recorded=True),
    LOAD["dtype"],
    LOAD["device"],
    SCORING["norm_method"],
    Option("judge", "auto", "Grading rule (isograd.qa.grading.Judge)", choice=Judge,
           stages=("grade",), recorded=True),
    SCORING["trace"].replace(help="Also score every answer token (the trace stage: methods "
                             "epistemic_token_max/mean, per-row profiles); ~T times the score."),
    SCORING["layer_scale"],
    SCORING["last_layers"],
    Option("baseline_options", {}, "Baseline option METHOD.KEY=VALUE (repeatable), e.g. "
           "semantic_entropy.entailment=embedding.", type=list[str], flag="--option",
           recorded=True, cli_default=None, parse=parse_options),
    Option("subset", None, "Run the costly stages (trace, samples, baselines) on the first N "
           "questions only; each method is evaluated on the questions that have it.", type=int,
           min=1, recorded=True),
    Option("method_subsets", {}, "A costly baseline's own --subset: METHOD=N,... (e.g. "
           "p_true=500,semantic_entropy=500); the samples cover the largest N of the methods "
           "that read them; unlisted methods cover every question (a larger N later computes "
           "only the missing rows).", flag="--method-subset", recorded=True, cli_default=None,
           parse=method_subsets, coerce=method_subsets),
    Option("trace_subset", None, "The trace stage's own --subset (it costs ~T times the "
           "score); needs --trace.", type=int, min=1, recorded=True),
    *LOAD.without("model", "dtype", "device"),
    Option("stage", "all", "Run one stage", choice=Stage),
    Option("force_stages", (), "Comma-separated stages to redo (with what reads them): "
           "generate | grade | score | trace | samples | baselines | a baseline's name.",
           flag="--force-stage", cli_default=None, parse=comma_list, coerce=comma_list),
    SCORING["batch_size"].replace(help="Questions per generation batch and per "
                                  "forward+backward of the score stage."),
    THREADS,
    *DETECTOR,
    Option("progress", True, "Show a progress bar per stage.", type=bool, cli=False),
))
"""Every option of `isograd.qa.pipeline.run_qa` (and of ``isograd qa`` but ``--convert`` and
``--quiet``)."""

SCORE = (LOAD + SCORING.without("trace", "batch_size") + Options((
    Option("as_question", False, "'prompt' is a bare question: wrap it in the QA prompt.",
           type=bool),
    SCORING["trace"].replace(help="Also write each answer's per-token profile "
                             "(token_epistemic, token_aleatoric); ~T times the score."),
    SCORING["batch_size"].replace(default=8, help="Pairs per forward pass (at most: a batch "
                                  "over the memory budget is split, pairs grouped by length)."),
    Option("memory_budget", None, "Bytes the score pass may hold at once: a number of bytes or a "
           "size like 4GiB; default: half the memory available (isograd.lm.memory).",
           parse=memory_size, coerce=memory_size),
    Option("shard", "none", "Under torchrun: a model copy per rank, or FSDP2's split of the "
           "weights across the ranks", choice=Shard),
    THREADS,
    *DETECTOR,
    Option("progress", True, "Show a progress bar.", type=bool, cli=False),
))).with_(prompt={"help": "With --as-question: prompt style", "stages": (),
                  "legacy": "short", "cli_default": None})
"""Every option of `isograd.qa.score_pairs.score_file` (and of ``isograd score`` but
``--input``, ``--out``, ``--threads`` and ``--quiet``)."""


def _subset_of(self: Any, stage: str, samplers: Sequence[str] | None = None) -> int | None:
    """How many of the first questions stage `stage` covers (None: all): ``trace_subset``
    (else ``subset``) for the trace; a baseline's ``method_subsets`` entry, else ``subset``;
    for the samples the largest of those of `samplers` (the methods that read them; default:
    every costly method of the run)."""
    if stage == "trace" and self.trace_subset is not None:
        return self.trace_subset
    per = self.method_subsets or {}
    if stage.startswith("baseline-"):
        return per.get(stage[len("baseline-"):], self.subset)
    if stage == "samples" and per:
        names = samplers if samplers is not None else [m for m in self.methods
                                                        if m not in CHEAP_METHODS]
        sizes = [per.get(m, self.subset) for m in names]
        return None if not sizes or None in sizes else max(sizes)
    if stage in ("trace", "samples"):
        return self.subset
    return None


def _to_json(self: Any) -> dict[str, Any]:
    """The config as recorded in config.json (methods as a list)."""
    from dataclasses import asdict

    d = asdict(self)
    d["methods"] = list(self.methods)
    return d


def _from_json(cls: Any, recorded: dict[str, Any]) -> Any:
    """A config from a recorded config.json (options it lacks at their defaults)."""
    known = {k: v for k, v in recorded.items() if k in cls.__dataclass_fields__}
    return cls(**{**known, "methods": tuple(recorded.get("methods", ALL_METHODS))})


QAConfig = QA.config_class("QAConfig", {
    "__doc__": "The recorded options of a QA run (DIR/config.json): the entries of `QA` with "
               "``recorded``.",
    "subset_of": _subset_of, "to_json": _to_json, "from_json": classmethod(_from_json)})
