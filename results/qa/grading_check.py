"""Grading checks on the committed answers: exact match vs containment (why containment is the
alias default), the TruthfulQA generation graders against hand labels of 40 answers
(results/qa/truthfulqa-gen-200/hand_labels.json), and how many labels of each committed run
the digits-vs-words rule (`isograd.qa.numbers`) changes.

Usage: .venv/bin/python results/qa/grading_check.py   (the packaged data; no model: it regrades the answers stored in results/qa/{triviaqa-150,nq-open-500}/scores.jsonl).
"""

from __future__ import annotations

import json
from pathlib import Path
from unittest import mock

from isograd.evaluate.report import read_scores
from isograd.qa.datasets import load_dataset
from isograd.qa.grading import grade

HERE = Path(__file__).parent


def main() -> None:
    print("| dataset | answers | exact | contains | in both |")
    print("| --- | --- | --- | --- | --- |")
    for name in ("triviaqa-150", "nq-open-500"):
        rows = read_scores(HERE / name / "scores.jsonl")
        qs = {q.id: q for q in load_dataset(name.replace("-500", ""), limit=len(rows))}
        ex = [grade(qs[r["id"]], r["answer"], judge="exact").correct for r in rows]
        co = [grade(qs[r["id"]], r["answer"], judge="contains").correct for r in rows]
        both = sum(a and b for a, b in zip(ex, co))
        print(f"| {name} | {len(rows)} | {sum(ex)} | {sum(co)} | {both} |")
    hand = json.loads((HERE / "truthfulqa-gen-200" / "hand_labels.json").read_text())["labels"]
    rows = {r["id"]: r for r in read_scores(HERE / "truthfulqa-gen-200" / "scores.jsonl")}
    qs = {q.id: q for q in load_dataset("truthfulqa-gen", limit=len(rows))}
    print()
    print(f"TruthfulQA generation, {len(hand)} hand-labelled answers ({sum(hand.values())} correct):")
    print("| grader | marked correct | agreement with the hand labels |")
    print("| --- | --- | --- |")
    for judge in ("rouge_l", "f1", "bleu"):
        got = {i: int(grade(qs[i], rows[i]["answer"], judge=judge).correct) for i in hand}
        agree = sum(got[i] == hand[i] for i in hand) / len(hand)
        print(f"| {judge} | {sum(got.values())} | {agree:.1%} |")


def _regrade(rows: list[dict], qs: dict, judge: str) -> list[bool]:
    return [grade(qs[r["id"]], r.get("pick", r["answer"]), judge=judge).correct for r in rows]


def number_words_check() -> None:
    """Regrade every committed run's answers with and without numbers-in-words-as-digits."""
    print()
    print("Labels changed by matching numbers in digits and in words (committed answers regraded "
          "with the run's grader, with and without the rule):")
    print("| run | answers | correct before | correct after | wrong -> correct | correct -> wrong |")
    print("| --- | --- | --- | --- | --- | --- |")
    for cfg in sorted(HERE.glob("**/config.json")):
        run = cfg.parent
        if not (run / "scores.jsonl").exists():
            continue
        c = json.loads(cfg.read_text())
        rows = read_scores(run / "scores.jsonl")
        qs = {q.id: q for q in load_dataset(c["dataset"], limit=c.get("limit"))}

        with mock.patch("isograd.qa.grading.numbers_to_digits", lambda words: list(words)):
            before = _regrade(rows, qs, c["judge"])
        after = _regrade(rows, qs, c["judge"])
        up = sum(not b and a for b, a in zip(before, after))
        down = sum(b and not a for b, a in zip(before, after))
        print(f"| {run.relative_to(HERE)} | {len(rows)} | {sum(before)} | {sum(after)} | {up} "
              f"| {down} |")


if __name__ == "__main__":
    main()
    number_words_check()
