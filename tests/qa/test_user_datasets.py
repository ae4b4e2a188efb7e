"""A user's own questions (`isograd qa --dataset PATH`): fields, errors, and the README's
example run end to end on a tiny model."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from isograd.qa.datasets import DatasetError, is_user_dataset, load_dataset
from isograd.qa.grading import grade

from ..lm.tiny_lm import save_tiny

README = Path(__file__).resolve().parents[2] / "README.md"


def write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    p = tmp_path / name
    p.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return p


def jsonl(*rows: dict) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def test_generation_rows(tmp_path):
    p = write(tmp_path, "my.jsonl", jsonl(
        {"question": "Capital of France?", "answers": ["Paris", "Paris", "Paname"]},
        {"question": "Legs of a spider?", "answer": "eight", "id": "spider"},
        {"question": "Int id?", "answer": ["x"], "id": 7}))
    qs = load_dataset(str(p))
    assert [q.answers for q in qs] == [("Paris", "Paname"), ("eight",), ("x",)]
    assert qs[0].id.startswith("user-") and qs[1].id == "spider" and qs[2].id == "7"
    assert all(q.dataset == str(p) and q.label is None and not q.incorrect for q in qs)
    assert grade(qs[0], "It is Paris.").correct and not grade(qs[1], "six").correct
    twice = load_dataset(str(write(tmp_path, "twice.jsonl", jsonl(
        {"question": "Same?", "answer": "a"}, {"question": "Same?", "answer": "b"}))))
    assert twice[1].id == twice[0].id + "-2"  # a repeated question text gets its own id
    again = load_dataset(str(p), limit=1)  # ids do not depend on limit or order
    assert again[0].id == qs[0].id
    rev = write(tmp_path, "rev.jsonl", "".join(reversed(p.read_text().splitlines(True))))
    assert load_dataset(str(rev))[-1].id == qs[0].id


def test_multiple_choice_rows(tmp_path):
    p = write(tmp_path, "mc.jsonl", jsonl(
        {"question": "Red planet?", "choices": ["Venus", "Mars", "Moon"], "label": 1}))
    (q,) = load_dataset(str(p))
    assert q.options == ("Venus", "Mars", "Moon") and q.label == 1 and q.answers == ("Mars",)
    assert q.incorrect == ("Venus", "Moon")
    assert grade(q, "Mars").correct and not grade(q, 0).correct


def test_csv_with_json_and_semicolon_lists(tmp_path):
    p = write(tmp_path, "my.csv", 'id,question,answers\n'
              'a,"Capital of France?","[""Paris"", ""Paname""]"\n'
              'b,Who wrote Hamlet?,Shakespeare; William Shakespeare\n')
    qs = load_dataset(str(p))
    assert [q.id for q in qs] == ["a", "b"]
    assert qs[0].answers == ("Paris", "Paname")
    assert qs[1].answers == ("Shakespeare", "William Shakespeare")
    mc = write(tmp_path, "mc.csv", "question,choices,label\nPick?,yes;no,0\n")
    (q,) = load_dataset(str(mc))
    assert q.options == ("yes", "no") and q.label == 0


@pytest.mark.parametrize("text, line, field", [
    (jsonl({"question": "Q?"}), 1, "'answers'"),
    (jsonl({"question": "Q?", "answers": "Paris"}), 1, "'answers' must be a list"),
    (jsonl({"question": "Q?", "answers": []}), 1, "'answers' needs at least 1"),
    (jsonl({"question": "", "answer": "a"}), 1, "'question'"),
    (jsonl({"question": 3, "answer": "a"}), 1, "'question'"),
    (jsonl({"question": "Q?", "answer": "a", "id": "x"}, {"question": "R?", "answer": "b", "id": "x"}),
     2, "field 'id': duplicate id 'x' (first at line 1)"),
    (jsonl({"question": "Q?", "answer": "a", "id": True}), 1, "'id'"),
    (jsonl({"question": "Q?", "choices": ["a", "b"], "label": 2}), 1, "'label' = 2 is out of range"),
    (jsonl({"question": "Q?", "choices": ["a", "b"], "label": "1"}), 1, "'label' must be an integer"),
    (jsonl({"question": "Q?", "choices": ["a"], "label": 0}), 1, "'choices' needs at least 2"),
    (jsonl({"question": "Q?", "choices": ["a", "a"], "label": 0}), 1, "repeats an option"),
    (jsonl({"question": "Q?", "choices": ["a", "b"]}), 1, "'label'"),
    (jsonl({"question": "Q?", "answer": "a"}, {"question": "R?", "choices": ["a", "b"], "label": 0}),
     2, "a file holds one kind"),
    (jsonl({"question": "Q?", "answer": "a", "answers": ["a"]}), 1, "not both"),
    ('{"question": "Q?", "answer": "a"}\n{"question": "R?", "ans', 2, "invalid JSON line"),
    ('["question"]\n', 1, "expected a JSON object"),
    (b'{"question": "Q\xff?", "answer": "a"}\n', 1, "not UTF-8"),
])
def test_errors_name_file_line_and_field(tmp_path, text, line, field):
    p = write(tmp_path, "bad.jsonl", text)
    with pytest.raises(DatasetError) as ei:
        load_dataset(str(p))
    assert ei.value.line == line and str(p) in str(ei.value)
    assert field in str(ei.value), str(ei.value)


def test_empty_and_missing_files(tmp_path):
    with pytest.raises(DatasetError, match="no questions"):
        load_dataset(str(write(tmp_path, "empty.jsonl", "\n")))
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        load_dataset(str(tmp_path / "nope.jsonl"))
    with pytest.raises(DatasetError, match="column 'question'"):
        load_dataset(str(write(tmp_path, "h.csv", "q,answers\nQ?,a\n")))
    with pytest.raises(ValueError, match="--data"):
        load_dataset(str(write(tmp_path, "ok.jsonl", jsonl({"question": "Q", "answer": "a"}))),
                     data=tmp_path)
    assert not is_user_dataset("triviaqa") and is_user_dataset("x/y.jsonl")
    with pytest.raises(ValueError, match="your own .jsonl or .csv"):
        load_dataset("no-such-dataset")


def _readme_example() -> tuple[str, list[str]]:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("**Your own questions**"):]
    data = re.search(r"```jsonl\n(.*?)```", section, re.S).group(1)
    command = re.search(r"```bash\n(isograd qa --dataset my\.jsonl[^\n]*)\n```", section).group(1)
    return data, shlex.split(command)[1:]


def test_readme_example_runs_end_to_end(tmp_path, monkeypatch):
    """The README's file and command, as written, on a tiny random Llama instead of SmolLM2."""
    from typer.testing import CliRunner

    from isograd.cli import app
    from isograd.rows.files import read_rows

    data, args = _readme_example()
    assert len(data.strip().splitlines()) == 3
    model_dir = save_tiny(tmp_path / "tiny")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my.jsonl").write_text(data, encoding="utf-8")
    res = CliRunner().invoke(app, [*args, "--model", str(model_dir), "--k", "2",
                                   "--max-new-tokens", "4", "--quiet"])
    assert res.exit_code == 0, res.output
    out = tmp_path / args[args.index("--out") + 1]
    rows = read_rows(out / "scores.jsonl")
    want = load_dataset("my.jsonl")
    assert [r["id"] for r in rows] == [q.id for q in want] and rows[1]["id"] == "spider"
    for r in rows:
        assert r["epistemic"] > 0 and r["aleatoric"] == pytest.approx(r["p"] * (1 - r["p"]))
        assert r["grade_method"] == "alias_contains"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n"] == 3 and metrics["dataset"] == "my.jsonl"
    assert (out / "report.md").is_file()


def test_multiple_choice_file_runs(tmp_path):
    from isograd.lm import load_model
    from isograd.qa.pipeline import run_qa
    from isograd.rows.files import read_rows

    model_dir = save_tiny(tmp_path / "tiny")
    p = write(tmp_path, "mc.jsonl", jsonl(
        {"question": "Red planet?", "choices": ["Venus", "Mars"], "label": 1, "id": "a"},
        {"question": "Largest?", "choices": ["ant", "whale", "cat"], "label": 1, "id": "b"}))
    m = run_qa(tmp_path / "out", dataset=str(p), loaded=load_model(str(model_dir)),
               methods=("msp",), progress=False)
    rows = read_rows(tmp_path / "out" / "scores.jsonl")
    assert m["n"] == 2 and [r["label"] for r in rows] == [1, 1]
    assert all(r["correct"] == (r["pick"] == 1) for r in rows)
