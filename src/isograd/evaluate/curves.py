"""Plots beside the ROC: the risk–coverage curve of each score and example per-token profiles.

Each function draws one figure from numbers it is given and writes it (matplotlib, Agg
backend, imported lazily: the ``eval`` extra).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import metrics as M

PROFILE_KEYS = ("token_epistemic", "token_aleatoric")
"""Row fields of a per-token profile (lists, one value per answer token; `isograd.lm.score`'s
``trace``): U_E(t) = σ²‖∇θ p_t‖² and U_C(t) = p_t(1 − p_t)."""


def pyplot():
    """matplotlib.pyplot on the Agg backend (files only, no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


STYLES = ("-", "--", "-.", (0, (3, 1, 1, 1, 1, 1)))
"""The curves' line styles, cycled beside the 20 colours of tab20."""


def line_style(plt: Any, k: int) -> dict[str, Any]:
    """The colour and line style of the `k`-th curve of a figure: no two of 20 look alike."""
    return {"color": plt.get_cmap("tab20")(k % 20), "ls": STYLES[k % len(STYLES)]}


def finish(fig: Any, ax: Any, path: str | Path, *, xlabel: str, ylabel: str, title: str,
           legend: dict[str, Any]) -> None:
    """Label one-axes figure `fig`, write it to `path` (120 dpi)."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(**legend)
    if "bbox_to_anchor" not in legend:  # a legend outside keeps the axes' own size
        fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")  # a legend outside the axes included


def plot_risk_coverage(path: str | Path, y: np.ndarray, oriented: Mapping[str, np.ndarray],
                       labels: Mapping[str, str] | None = None, title: str = "", *,
                       alpha: float | None = None,
                       chosen: Mapping[str, tuple[float, float]] | None = None) -> None:
    """Error rate among the k most confident answers against coverage k/N, one line per score.

    Args:
        path: the image to write.
        y: int [N], 1 = incorrect answer.
        oriented: name -> float [N], higher = more uncertain (NaN rows left out per score).
        labels: name -> legend text (default: the name).
        title: figure title.
        alpha: a target error rate among the answered, drawn as a horizontal line.
        chosen: name -> (coverage, error among the answered) of a chosen answering threshold
            (e.g. a detector's certified one), drawn as a marker.
    """
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 5))
    try:
        ax.axhline(float(np.mean(y)), color="0.7", lw=1, ls="--", label="base rate (no rejection)")
        for m, s in oriented.items():
            ok = ~np.isnan(s)
            if not ok.any():
                continue
            cov, risk = M.risk_coverage(y[ok], s[ok])
            name = (labels or {}).get(m, m)
            ax.plot(cov, risk, lw=1.3, label=f"{name} (AURC {risk.mean():.2f})",
                    **line_style(plt, len(ax.get_lines()) - 1))
        if alpha is not None:
            ax.axhline(alpha, color="C3", lw=1, ls=":", label=f"target α = {alpha:g}")
        for name, (c, r) in (chosen or {}).items():
            ax.plot([c], [r], marker="*", ms=11, ls="none",
                    label=f"{name}: coverage {c:.2f}, error {r:.2f}")
        ax.set_xlim(0, 1)
        finish(fig, ax, path, xlabel="coverage (fraction of answers kept, most confident first)",
               ylabel="error rate among the kept answers", title=title or "Risk–coverage",
               legend={"fontsize": 7, "loc": "center left", "bbox_to_anchor": (1.02, 0.5)})
    finally:
        plt.close(fig)


def profile_examples(rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The first correct and the first incorrect row that carry a per-token profile (0–2 rows)."""
    out: list[Mapping[str, Any]] = []
    for want in (True, False):
        for r in rows:
            if bool(r.get("correct")) is want and all(r.get(k) for k in PROFILE_KEYS):
                out.append(r)
                break
    return out


def plot_token_profiles(path: str | Path, rows: Sequence[Mapping[str, Any]],
                        title: str = "") -> bool:
    """U_E(t) and U_C(t) along the answer of one correct and one incorrect example.

    Args:
        path: the image to write.
        rows: QA rows; those with ``token_epistemic``/``token_aleatoric`` lists are candidates.
        title: figure title.

    Returns:
        False (nothing written) when no row carries a profile.
    """
    ex = profile_examples(rows)
    if not ex:
        return False
    plt = pyplot()
    fig, axes = plt.subplots(len(ex), 1, figsize=(7, 2.6 * len(ex)), squeeze=False)
    try:
        for ax, r in zip(axes[:, 0], ex):
            ue = np.asarray(r["token_epistemic"], dtype=float)
            uc = np.asarray(r["token_aleatoric"], dtype=float)
            t = np.arange(1, len(ue) + 1)
            ax.plot(t, ue, marker="o", lw=1.3, label="U_E(t) = ‖∇θ p_t‖²")
            ax.set_ylabel("U_E(t)")
            ax2 = ax.twinx()
            ax2.plot(t, uc, marker="s", lw=1.0, color="C1", label="U_C(t) = p_t(1 − p_t)")
            ax2.set_ylabel("U_C(t)")
            verdict = "correct" if r.get("correct") else "incorrect"
            answer = str(r.get("answer", ""))
            ax.set_title(f"{verdict}: {answer[:70]!r}", fontsize=8)
            ax.set_xlabel("answer token t")
            lines = ax.get_legend_handles_labels()
            lines2 = ax2.get_legend_handles_labels()
            ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], fontsize=6, loc="upper right")
        if title:
            fig.suptitle(title, fontsize=10)
        fig.tight_layout()
        fig.savefig(path, dpi=120)
    finally:
        plt.close(fig)
    return True
