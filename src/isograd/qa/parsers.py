"""The parsers of the registered datasets: a file -> `Question`s, raising `DatasetError`
(file, line and field) on anything malformed."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from .questions import Question, dedupe, question_hash, unique_ids
from .records import (
    DatasetError,
    iter_json_array,
    iter_jsonl,
    iter_records,
    need_dict,
    need_str,
    need_str_list,
    read_text,
)


def split_answers(cell: str) -> list[str]:
    """Split a TruthfulQA answer cell on ``;`` (answers are ``"; "``-separated; a few cells end
    with a stray ``;``), stripped, empty pieces dropped (as TruthfulQA's own ``split_multi_answer``)."""
    return [a.strip() for a in cell.split(";") if a.strip()]


TQA_COLUMNS = ("Question", "Best Answer", "Correct Answers", "Incorrect Answers")


def parse_truthfulqa_csv(path: Path, name: str = "truthfulqa-gen") -> list[Question]:
    """TruthfulQA.csv: answers = Best Answer then Correct Answers (deduplicated), incorrect =
    Incorrect Answers. The CSV starts with a UTF-8 BOM, hence ``utf-8-sig``."""
    with io.StringIO(read_text(path), newline="") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        missing = [c for c in TQA_COLUMNS if c not in header]
        if missing:
            raise DatasetError(path, 1, f"CSV header lacks columns {missing}; expected the "
                               f"TruthfulQA columns {list(TQA_COLUMNS)} (found {header})")
        rows = []
        for rec in reader:
            line = reader.line_num  # last physical line of the record (cells may span lines)
            if None in rec or any(rec[c] is None for c in TQA_COLUMNS):
                raise DatasetError(path, line, f"expected {len(header)} cells per row")
            q = rec["Question"].strip()
            if not q:
                raise DatasetError(path, line, "empty Question")
            correct = split_answers(rec["Correct Answers"])
            best = rec["Best Answer"].strip()
            wrong = split_answers(rec["Incorrect Answers"])
            if not (correct or best):
                raise DatasetError(path, line, "no correct answer (Best Answer and Correct Answers empty)")
            if not wrong:
                raise DatasetError(path, line, "no incorrect answer (Incorrect Answers empty)")
            rows.append((q, dedupe([best, *correct]), dedupe(wrong)))
    ids = unique_ids("truthfulqa", [r[0] for r in rows])
    return [Question(id=i, dataset=name, question=q, answers=a, incorrect=w)
            for i, (q, a, w) in zip(ids, rows)]


def parse_truthfulqa_mc1(path: Path, name: str = "truthfulqa-mc1") -> list[Question]:
    """mc_task.json: options = mc1_targets keys in file order, label = index of the single 1.

    Ids equal the generation task's ids for the same question text.
    """
    rows = []
    for line, rec in iter_json_array(path):
        rec = need_dict(path, line, rec)
        q = need_str(path, line, rec, "question")
        targets = rec.get("mc1_targets")
        if not isinstance(targets, dict) or not targets:
            raise DatasetError(path, line, "field 'mc1_targets' missing or not a non-empty object")
        options = tuple(k.strip() for k in targets)
        flags = list(targets.values())
        if any(v not in (0, 1) or isinstance(v, bool) for v in flags) or flags.count(1) != 1:
            raise DatasetError(path, line, f"mc1_targets must map options to 0/1 with exactly one 1, got {flags}")
        if len(set(options)) != len(options):
            raise DatasetError(path, line, "mc1_targets has repeated options")
        label = flags.index(1)
        rows.append((q, options, label))
    ids = unique_ids("truthfulqa", [r[0] for r in rows])
    return [Question(id=i, dataset=name, question=q, answers=(opts[lab],),
                     incorrect=tuple(o for j, o in enumerate(opts) if j != lab),
                     options=opts, label=lab)
            for i, (q, opts, lab) in zip(ids, rows)]


def _trivia_fields(path: Path, line: int | None, rec: dict) -> tuple[str | None, str, list[str]]:
    """(id, question, answers) from the llm-foundry layout (context, answer, aliases), the sample
    layout (qid, question, gold_answer, aliases), the HF layout (question_id, question,
    answer{value, aliases}) or the official one (Question...)."""
    if "context" in rec and "question" not in rec:  # llm-foundry: "Question: <q>\nAnswer:"
        ctx = need_str(path, line, rec, "context")
        q = ctx.removeprefix("Question:").removesuffix("Answer:").strip()
        if not q:
            raise DatasetError(path, line, "field 'context' holds no question")
        qid, gold, aliases = rec.get("id"), rec.get("answer"), rec.get("aliases")
    elif "Question" in rec and "question" not in rec:  # official TriviaQA json
        ans = rec.get("Answer") or {}
        qid, q = rec.get("QuestionId"), need_str(path, line, rec, "Question")
        gold, aliases = ans.get("Value"), ans.get("Aliases")
    elif isinstance(rec.get("answer"), dict):  # Hugging Face mandarjoshi/trivia_qa
        ans = rec["answer"]
        qid, q = rec.get("question_id"), need_str(path, line, rec, "question")
        gold, aliases = ans.get("value"), ans.get("aliases")
    else:
        qid, q = rec.get("qid", rec.get("id")), need_str(path, line, rec, "question")
        gold, aliases = rec.get("gold_answer"), rec.get("aliases", rec.get("answer"))
    if aliases is None:
        raise DatasetError(path, line, "no answer aliases (field 'aliases')")
    aliases = need_str_list(path, line, aliases, "aliases")
    golds = [gold.strip()] if isinstance(gold, str) and gold.strip() else []
    return (str(qid) if qid is not None else None), q, [*golds, *aliases]


def parse_triviaqa(path: Path, name: str = "triviaqa") -> list[Question]:
    """TriviaQA: answers = gold answer then its aliases (deduplicated); id = the file's qid, or
    ``triviaqa-<hash of the question>`` when the file has none."""
    out: list[Question] = []
    seen: dict[str, int | None] = {}
    for line, rec in iter_records(path):
        rec = need_dict(path, line, rec)
        qid, q, answers = _trivia_fields(path, line, rec)
        qid = qid or f"triviaqa-{question_hash(q)}"
        if qid in seen:
            raise DatasetError(path, line, f"duplicate id {qid!r} (first at line {seen[qid]})")
        seen[qid] = line
        out.append(Question(id=qid, dataset=name, question=q, answers=dedupe(answers)))
    return out


def parse_nq_open(path: Path, name: str = "nq-open") -> list[Question]:
    """NQ-open JSON lines ``{"question", "answer": [...]}``."""
    rows = []
    for line, rec in iter_jsonl(path):
        rec = need_dict(path, line, rec)
        q = need_str(path, line, rec, "question")
        answers = need_str_list(path, line, rec.get("answer"), "field 'answer'")
        rows.append((q, dedupe(answers)))
    ids = unique_ids("nq", [r[0] for r in rows])
    return [Question(id=i, dataset=name, question=q, answers=a) for i, (q, a) in zip(ids, rows)]


def parse_arc(path: Path, name: str = "arc-easy-test") -> list[Question]:
    """ARC JSON lines ``{"id", "question", "choices": {"text": [...], "label": [...]},
    "answerKey"}``: options = the choices' texts in file order, label = the index of
    ``answerKey`` among the choices' labels; id = ``arc-<the file's id>``."""
    out: list[Question] = []
    seen: dict[str, int | None] = {}
    for line, rec in iter_jsonl(path):
        rec = need_dict(path, line, rec)
        q = need_str(path, line, rec, "question")
        rid = need_str(path, line, rec, "id")
        choices = rec.get("choices")
        texts = choices.get("text") if isinstance(choices, dict) else None
        keys = choices.get("label") if isinstance(choices, dict) else None
        for what, v in (("text", texts), ("label", keys)):
            if not isinstance(v, list) or not all(isinstance(t, str) and t.strip() for t in v):
                raise DatasetError(path, line, f"field 'choices.{what}' must be a list of "
                                   "non-empty strings")
        if len(texts) != len(keys) or len(texts) < 2:
            raise DatasetError(path, line, f"field 'choices': {len(texts)} texts but "
                               f"{len(keys)} labels (at least 2 options needed)")
        key = rec.get("answerKey")
        if key not in keys:
            raise DatasetError(path, line, f"field 'answerKey': {key!r} is none of the labels "
                               f"{keys}")
        qid = f"arc-{rid}"
        if qid in seen:
            raise DatasetError(path, line, f"duplicate id {rid!r} (first at line {seen[qid]})")
        seen[qid] = line
        options = tuple(t.strip() for t in texts)
        lab = keys.index(key)
        out.append(Question(id=qid, dataset=name, question=q, answers=(options[lab],),
                            incorrect=tuple(o for j, o in enumerate(options) if j != lab),
                            options=options, label=lab))
    return out
