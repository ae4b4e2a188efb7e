"""A user's own questions: ``isograd qa --dataset my.jsonl`` (or ``my.csv``).

One row per question, one kind per file:

* generation: ``question``, ``answers`` (a list of correct answers) or ``answer`` (one), and an
  optional ``id``; answers are graded by alias containment, like TriviaQA and NQ-open;
* multiple choice: ``question``, ``choices`` (a list of at least two options) and ``label``
  (the 0-based index of the correct option), optional ``id``; the model picks the option of
  highest likelihood, like TruthfulQA MC1.

JSON lines (``.jsonl``, ``.json`` lines), or CSV (``.csv``) with a header naming these columns;
in a CSV cell, ``answers`` and ``choices`` are a JSON list (``["Paris", "paris"]``) or values
separated by ``;``. Without ``id``, a question's id is ``user-`` and a hash of its text, so it
survives reordering and ``limit``. Every problem raises :class:`DatasetError` naming the file,
the line and the field.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .questions import Question, dedupe, unique_ids
from .records import DatasetError, iter_jsonl, need_dict, need_str, read_text

SUFFIXES = (".jsonl", ".json", ".csv")


def looks_like_path(name: str) -> bool:
    """Whether a ``--dataset`` value names a file rather than a registered dataset id."""
    return Path(name).suffix.lower() in SUFFIXES or "/" in name or "\\" in name


def _csv_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with io.StringIO(read_text(path), newline="") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        if "question" not in header:
            raise DatasetError(path, 1, f"CSV header lacks the column 'question' (found {header})")
        for rec in reader:
            if None in rec:
                raise DatasetError(path, reader.line_num, f"more cells than the {len(header)} "
                                   "header columns")
            yield reader.line_num, {k: v for k, v in rec.items() if v not in (None, "")}


def _cell_list(path: Path, line: int, key: str, cell: str) -> Any:
    """A CSV cell holding a list: JSON (``[...]``) or ``;``-separated values."""
    if cell.lstrip().startswith("["):
        try:
            return json.loads(cell)
        except ValueError as e:
            raise DatasetError(path, line, f"field {key!r}: invalid JSON list ({e})") from None
    return [v.strip() for v in cell.split(";")]


def _str_list(path: Path, line: int, key: str, val: Any, *, at_least: int = 1) -> list[str]:
    if not isinstance(val, list) or not all(isinstance(v, str) for v in val):
        raise DatasetError(path, line, f"field {key!r} must be a list of strings, got "
                           f"{type(val).__name__}")
    out = [v.strip() for v in val if v.strip()]
    if len(out) < at_least:
        raise DatasetError(path, line, f"field {key!r} needs at least {at_least} non-empty "
                           f"string(s), got {len(out)}")
    return out


def _row(path: Path, line: int, rec: dict[str, Any], is_csv: bool) -> tuple[str | None, Question]:
    """(the file's id or None, the question) of one record; `dataset` is filled in later."""
    q = need_str(path, line, rec, "question")
    rid = rec.get("id")
    if rid is not None:
        if isinstance(rid, bool) or not isinstance(rid, (str, int)) or not str(rid).strip():
            raise DatasetError(path, line, "field 'id' must be a non-empty string or an integer")
        rid = str(rid).strip()
    for key in ("answers", "choices"):
        if is_csv and key in rec:
            rec[key] = _cell_list(path, line, key, rec[key])
    if "choices" in rec or "label" in rec:
        if "answers" in rec or "answer" in rec:
            raise DatasetError(path, line, "a row has either 'choices' and 'label' (multiple "
                               "choice) or 'answers'/'answer' (generation), not both")
        options = _str_list(path, line, "choices", rec.get("choices"), at_least=2)
        if len(set(options)) != len(options):
            raise DatasetError(path, line, "field 'choices' repeats an option")
        label = rec.get("label")
        if is_csv and isinstance(label, str) and label.strip().lstrip("-").isdigit():
            label = int(label)
        if isinstance(label, bool) or not isinstance(label, int):
            raise DatasetError(path, line, f"field 'label' must be an integer index into "
                               f"'choices', got {label!r}")
        if not 0 <= label < len(options):
            raise DatasetError(path, line, f"field 'label' = {label} is out of range 0.."
                               f"{len(options) - 1} for {len(options)} choices")
        return rid, Question(id="", dataset="", question=q, answers=(options[label],),
                             incorrect=tuple(o for i, o in enumerate(options) if i != label),
                             options=tuple(options), label=label)
    if "answers" in rec and "answer" in rec:
        raise DatasetError(path, line, "give either 'answers' (a list) or 'answer', not both")
    if "answers" in rec:
        answers = _str_list(path, line, "answers", rec["answers"])
    elif "answer" in rec:
        val = rec["answer"]
        val = [val] if isinstance(val, str) else val
        answers = _str_list(path, line, "answer", val)
    else:
        raise DatasetError(path, line, "field 'answers' (or 'answer') missing; a multiple-choice "
                           "row has 'choices' and 'label' instead")
    return rid, Question(id="", dataset="", question=q, answers=dedupe(answers))


def load_user_dataset(path: str | Path) -> list[Question]:
    """Questions of a user's JSONL or CSV file (fields in the module docstring), file order.

    Returns:
        Questions whose ``dataset`` is the path as given.

    Raises:
        FileNotFoundError: no such file. DatasetError: a malformed file (file, line, field).
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"dataset file {path} not found (a user dataset is a .jsonl or "
                                ".csv file; registered datasets are named by their id)")
    is_csv = p.suffix.lower() == ".csv"
    rows: list[tuple[int, str | None, Question]] = []
    for line, rec in (_csv_rows(p) if is_csv else iter_jsonl(p)):
        rec = need_dict(p, line, rec)
        rows.append((line, *_row(p, line, dict(rec), is_csv)))
    if not rows:
        raise DatasetError(p, None, "no questions in file")
    first_mc = rows[0][2].label is not None
    seen: dict[str, int] = {}
    auto = iter(unique_ids("user", [q.question for _, rid, q in rows if rid is None]))
    out = []
    for line, rid, q in rows:
        if (q.label is not None) != first_mc:
            kinds = ("generation", "multiple choice")
            raise DatasetError(p, line, f"this row is {kinds[not first_mc]} but line "
                               f"{rows[0][0]} is {kinds[first_mc]}: a file holds one kind")
        qid = rid if rid is not None else next(auto)
        if qid in seen:
            raise DatasetError(p, line, f"field 'id': duplicate id {qid!r} (first at line "
                               f"{seen[qid]})")
        seen[qid] = line
        out.append(Question(id=qid, dataset=str(path), question=q.question, answers=q.answers,
                            incorrect=q.incorrect, options=q.options, label=q.label))
    return out
