"""Which few-shot prompt for base models (`PromptStyle.BASE`)? Greedy answers only.

Puts the first ``--limit`` questions of a packaged dataset to a model in several candidate
prompts (isograd's `short` and `fewshot` styles, and ``Q: ... A:`` few-shot text with three
shot sets) and tabulates per candidate: accuracy (isograd.qa.grading.grade), how often the
answer *is* a shot's answer (normalised exact match: copied), how often it contains one as
whole words, empty answers, and seconds per question. No gradient scoring (CPU budget).
Also the most frequent answer and its count (a weak model repeats popular answers, "The
Beatles", whatever the question). Resumable: a candidate whose answers file exists is not rerun
(and the model is not loaded when none is left to run).

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python results/qa/prompts/base/compare.py \
        --model gemma3-270m --dataset nq-open --limit 100 --out results/qa/prompts/base
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from collections import Counter
from pathlib import Path

import torch

from isograd.lm import greedy_answers, load_model, qa_prompt
from isograd.lm.prompts import BASE_EXAMPLES, EXAMPLES, INSTRUCTION, base_prompt, bos_text
from isograd.qa.datasets import load_dataset
from isograd.qa.grading import alias_match, copies, grade
from isograd.qa.similarity import normalize_answer

# typical quiz shots (a year, a painter, capitals ...): the kind the issue saw copied
TRIVIA5 = (
    ("In which year did World War II end?", "1945"),
    ("Who painted the Mona Lisa?", "Leonardo da Vinci"),
    ("What is the capital of Australia?", "Canberra"),
    ("Which planet is known as the Red Planet?", "Mars"),
    ("What is the largest ocean on Earth?", "The Pacific Ocean"),
)
def with_instruction(tok, question: str, shots) -> str:
    """`base_prompt` with isograd's instruction line first (after the BOS text)."""
    bos = bos_text(tok)
    return bos + INSTRUCTION + "\n\n" + base_prompt(tok, question, shots)[len(bos):]


# eight answer kinds, a year and a person among them (copied: "1989", "Herman Melville")
EIGHT = (
    ("How many legs does a spider have?", "Eight"),
    ("What is the chemical symbol for gold?", "Au"),
    ("In which city is the Brandenburg Gate?", "Berlin"),
    ("Who wrote the novel Moby-Dick?", "Herman Melville"),
    ("In which year did the Berlin Wall fall?", "1989"),
    ("What colour is a ripe banana?", "Yellow"),
    ("Which musical instrument has 88 keys?", "The piano"),
    ("What is the largest planet in the Solar System?", "Jupiter"),
)
# the same without the year and the person: no shot answers a "when" or "who" question
SIX = tuple(s for s in EIGHT if s[1] not in ("Herman Melville", "1989"))
# name -> (prompt builder, shots whose answers could be copied)
CANDIDATES = {
    "short": (lambda tok, q: qa_prompt(tok, q, "short"), ()),
    "fewshot": (lambda tok, q: qa_prompt(tok, q, "fewshot"), EXAMPLES),
    "qa-3": (lambda tok, q: base_prompt(tok, q, EXAMPLES), EXAMPLES),
    "qa-3-instruction": (lambda tok, q: with_instruction(tok, q, EXAMPLES), EXAMPLES),
    "qa-5-trivia": (lambda tok, q: base_prompt(tok, q, TRIVIA5), TRIVIA5),
    "qa-6": (lambda tok, q: base_prompt(tok, q, SIX), SIX),
    "qa-8": (lambda tok, q: base_prompt(tok, q, EIGHT), EIGHT),
}
DATASETS = ("nq-open", "triviaqa", "truthfulqa-gen")


def shot_leaks() -> list[str]:
    """Shot questions that occur in a packaged dataset's questions (should be none)."""
    shots = {normalize_answer(q) for _, s in CANDIDATES.values() for q, _ in s}
    seen = {normalize_answer(x.question) for d in DATASETS for x in load_dataset(d)}
    return sorted(shots & seen)


def run(load, questions, name: str, out: Path, args) -> dict:
    path = out / f"answers-{name}.jsonl"
    build, shots = CANDIDATES[name]
    if path.exists():
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        sec = rows[0]["_s_per_q"] if rows else float("nan")
    else:
        model, tok = load()
        t = time.perf_counter()
        ans = greedy_answers(model, tok, [build(tok, q.question) for q in questions],
                             max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)
        sec = (time.perf_counter() - t) / len(questions)
        rows = [{"id": q.id, "question": q.question, "answer": a.text,
                 "correct": grade(q, a.text).correct, "_s_per_q": sec}
                for q, a in zip(questions, ans)]
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    shot_answers = [a for _, a in shots]
    copied = [r for r in rows if copies(r["answer"], shot_answers)]
    contains = [r for r in rows
                if alias_match(r["answer"], shot_answers, question=r["question"])[0]]
    top, top_n = Counter(normalize_answer(r["answer"]) for r in rows if r["answer"]).most_common(1)[0]
    chosen = name.startswith("qa-") and not name.endswith("instruction") and shots == BASE_EXAMPLES
    return {"candidate": name + (" (chosen: `base`)" if chosen else ""), "n": len(rows), "shots": len(shots),
            "correct": sum(r["correct"] for r in rows),
            "copied": len(copied), "copied_wrong": sum(not r["correct"] for r in copied),
            "contains_shot_answer": len(contains),
            "empty": sum(not r["answer"] for r in rows),
            "most_frequent_answer": top, "most_frequent_count": top_n,
            "mean_answer_words": sum(len(r["answer"].split()) for r in rows) / len(rows),
            "s_per_question": sec,
            "copied_examples": sorted({r["answer"] for r in copied})[:8]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="gemma3-270m")
    ap.add_argument("--dataset", default="nq-open")
    ap.add_argument("--limit", type=int, default=100)
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--out", type=Path, default=Path("results/qa/prompts/base"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    leaks = shot_leaks()
    old = args.out / "compare.json"
    meta = json.loads(old.read_text()) if old.exists() else {}
    loaded: list = []

    def load():
        if not loaded:
            t = time.perf_counter()
            loaded.extend(load_model(args.model))
            meta["load_s"] = round(time.perf_counter() - t, 1)
        return loaded

    questions = load_dataset(args.dataset, limit=args.limit)
    table = []
    for name in CANDIDATES:
        table.append(run(load, questions, name, args.out, args))
        print(json.dumps(table[-1]), flush=True)
    if loaded:
        meta["peak_rss_gb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2)
    meta.update({"model": args.model, "dataset": args.dataset, "limit": args.limit,
                 "max_new_tokens": args.max_new_tokens, "batch_size": args.batch_size,
                 "torch_threads": 1, "shot_questions_in_datasets": leaks, "candidates": table})
    (args.out / "compare.json").write_text(json.dumps(meta, indent=1) + "\n")
    lines = ["| prompt | shots | correct | copied a shot's answer (wrong) | contains a shot's "
             "answer | most frequent answer | empty | mean words | s/question |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in table:
        lines.append(f"| {r['candidate']} | {r['shots']} | {r['correct']}/{r['n']} | "
                     f"{r['copied']} ({r['copied_wrong']}) | {r['contains_shot_answer']} | "
                     f"{r['most_frequent_answer']} ({r['most_frequent_count']}) | "
                     f"{r['empty']} | {r['mean_answer_words']:.1f} | {r['s_per_question']:.2f} |")
    (args.out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
