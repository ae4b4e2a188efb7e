"""Grading checks on the committed answers: exact match vs containment (why containment is the
alias default), and the TruthfulQA generation graders against hand labels of 40 answers
(results/qa/truthfulqa-gen-200/hand_labels.json).

Usage: .venv/bin/python results/qa/grading_check.py   (the packaged data; no model: it regrades the answers stored in results/qa/{triviaqa-150,nq-open-500}/scores.jsonl).
"""

from __future__ import annotations

import json
from pathlib import Path

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


if __name__ == "__main__":
    main()
