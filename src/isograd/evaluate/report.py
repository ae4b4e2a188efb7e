"""The files of an evaluated run: metrics.json, report.md and the figures (roc.png,
risk_coverage.png, token_profile.png when rows hold per-token profiles, reliability.png with a
detector); reading scores.jsonl.

The numbers come from :mod:`isograd.evaluate.table`, the text and plot from
:mod:`isograd.evaluate.render`; this module only writes and reads.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .calibration import plot_reliability
from .curves import plot_risk_coverage, plot_token_profiles
from .paper import method_label
from .render import answers_markdown, plot_roc, render_report
from .table import REFERENCE, oriented_columns


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.floating, float)):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    return x


def write_report(out_dir: str | Path, metrics: Mapping[str, Any],
                 rows: Sequence[Mapping[str, Any]],
                 labels: Mapping[str, str] | None = None) -> list[Path]:
    """Write metrics.json, report.md (`render_report`), answers.md (every question, worst
    first: `answers_markdown`) and the figures (skipped with a warning without matplotlib).

    Args:
        labels: report names of methods this package does not name itself (`method_label`).

    Returns:
        The paths written.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    p = out / "metrics.json"
    p.write_text(json.dumps(_jsonable(dict(metrics)), indent=2, ensure_ascii=False, allow_nan=False) + "\n", encoding="utf-8")
    written.append(p)
    p = out / "report.md"
    p.write_text(render_report(metrics, labels), encoding="utf-8")
    written.append(p)
    y, oriented = oriented_columns(rows, metrics)
    by = next((m for m in ("p_error", REFERENCE, "epistemic") if m in oriented), None)
    p = out / "answers.md"
    worst = oriented[by] if by else np.zeros(len(rows))
    p.write_text(answers_markdown(rows, worst, method_label(by, labels) if by else "file order",
                                  "p_error" in oriented), encoding="utf-8")
    written.append(p)
    try:
        p = out / "roc.png"
        title = f"{metrics.get('dataset') or ''} · {metrics.get('model') or ''}"
        plot_roc(p, y, oriented, title, labels)
        written.append(p)
        p = out / "risk_coverage.png"
        det = metrics.get("detector")
        chosen = ({"detector's threshold": (det["coverage"], det["error_answered"])}
                  if det and det["error_answered"] is not None else None)
        plot_risk_coverage(p, y, oriented, {m: method_label(m, labels) for m in oriented}, title,
                           alpha=det["alpha"] if det else None, chosen=chosen)
        written.append(p)
        if det and "p_error" in oriented:
            p = out / "reliability.png"
            plot_reliability(p, y, {method_label("p_error", labels): oriented["p_error"]},
                             title=f"Reliability · {title}")
            written.append(p)
        p = out / "token_profile.png"
        if plot_token_profiles(p, rows, title):
            written.append(p)
    except ImportError:
        warnings.warn("matplotlib not installed (extra 'eval'): roc.png, risk_coverage.png "
                      "and token_profile.png not written", stacklevel=2)
    return written


def read_scores(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a scores.jsonl file (errors name the line)."""
    rows = []
    with Path(path).open(encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{i}: invalid JSON line: {e.msg}") from e
    return rows
