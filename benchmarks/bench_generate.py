"""Batched greedy answers (`greedy_answers`, left padding) against one prompt at a time.

Runs both on the same 16 questions with the embedded SmolLM2-135M-Instruct (CPU), in one
process, alternating, and prints seconds per question and the ratio; checks that every batched
answer has the token ids of the one-at-a-time answer. Writes the figures as JSON.

    python benchmarks/bench_generate.py [--batch-sizes 1 8 16] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch

from isograd.lm import greedy_answer, greedy_answers, load_model, qa_prompt

QUESTIONS = [
    "What is the capital of France?", "Who wrote Hamlet?", "What is the largest planet?",
    "How many continents are there?", "Who painted the Mona Lisa?",
    "What is the boiling point of water in Celsius?", "Which ocean is the largest?",
    "What language is spoken in Brazil?", "Who discovered penicillin?",
    "What is the chemical symbol for sodium?", "In which year did World War II end?",
    "What is the tallest mountain on Earth?", "Who was the first person on the Moon?",
    "What is the currency of Japan?", "Which element has atomic number 1?",
    "What is the longest river in Africa?",
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 16])
    ap.add_argument("--max-new-tokens", type=int, default=24)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="results/bench/generate-cpu-smollm2.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, tok = load_model()
    prompts = [qa_prompt(tok, q) for q in QUESTIONS]
    n, cap = len(prompts), args.max_new_tokens
    greedy_answers(model, tok, prompts[:2], max_new_tokens=2)  # warm-up
    times: dict[str, list[float]] = {"one at a time": []}
    times.update({f"batch {b}": [] for b in args.batch_sizes})
    ref = None
    for _ in range(args.repeats):  # alternate, so load changes hit every variant alike
        t = time.perf_counter()
        ref = [greedy_answer(model, tok, p, max_new_tokens=cap) for p in prompts]
        times["one at a time"].append(time.perf_counter() - t)
        for b in args.batch_sizes:
            t = time.perf_counter()
            got = greedy_answers(model, tok, prompts, max_new_tokens=cap, batch_size=b)
            times[f"batch {b}"].append(time.perf_counter() - t)
            same = [g.token_ids == r.token_ids for g, r in zip(got, ref)]
            if not all(same):
                raise SystemExit(f"batch {b}: {same.count(False)} answer(s) differ from alone")
    base = statistics.median(times["one at a time"])
    rows = [{"variant": k, "median_s": statistics.median(v), "s_per_question":
             statistics.median(v) / n, "x_one_at_a_time": statistics.median(v) / base}
            for k, v in times.items()]
    print(f"SmolLM2-135M, {n} questions, max_new_tokens={cap}, threads={args.threads}, "
          f"median of {args.repeats}; every batched answer equals its answer alone")
    print("| variant | s / question | x one at a time |\n|---|---:|---:|")
    for r in rows:
        print(f"| {r['variant']} | {r['s_per_question']:.3f} | {r['x_one_at_a_time']:.2f} |")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "command": "python benchmarks/bench_generate.py --batch-sizes "
                   + " ".join(map(str, args.batch_sizes)) + f" --threads {args.threads}",
        "questions": n, "max_new_tokens": cap, "repeats": args.repeats,
        "load_average": os.getloadavg(), "mean_answer_tokens":
            sum(len(r.token_ids) for r in ref) / n, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
