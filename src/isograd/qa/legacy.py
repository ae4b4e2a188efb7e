"""Runs of the earlier single-file format (scores.jsonl + config.json) as stage files:
`convert_run` (``isograd qa --convert DIR``) splits their rows, nothing is recomputed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..rows.files import read_rows, rewrite_rows
from ..rows.lock import run_lock
from ..rows.stagefiles import RunMismatchError, open_stage, stage_path
from .evaluation import evaluate_run
from .options import QAConfig
from .stagerules import make_baselines, stage_configs


def is_legacy(out: Path) -> bool:
    """`out` holds a run of the earlier single-file format (not yet converted)."""
    return (out / "scores.jsonl").exists() and not (out / "generate.config.json").exists()


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
    if not is_legacy(outp):
        raise RunMismatchError(f"{outp}: no run of the earlier format to convert (it needs "
                               "scores.jsonl and config.json and no generate.config.json)")
    raw_text = (outp / "config.json").read_text(encoding="utf-8")
    raw = json.loads(raw_text)
    cfg = QAConfig.from_json(raw)
    old_metrics = outp / "metrics.json"
    old = json.loads(old_metrics.read_text(encoding="utf-8")) if old_metrics.exists() else {}
    # the metrics record the run's config as its last evaluation did (it may list defaults
    # that config.json, written earlier, lacks)
    recorded, command = old.get("config", raw), old.get("command")
    with run_lock(outp):
        rows = read_rows(outp / "scores.jsonl")
        configs = stage_configs(cfg, make_baselines(cfg),
                                multiple_choice=any("pick" in r for r in rows))
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
