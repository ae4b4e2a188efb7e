"""Benchmark: per-question cost of the gradient score (`isograd.lm.score`) at several batch sizes.

The pairs are the committed TriviaQA run's own (question, greedy answer) pairs
(results/qa/triviaqa-150/scores.jsonl), wrapped in the run's prompt. For each batch size B the same
N questions are scored B at a time (one forward + one backward per batch of B). The reference
in the same run is a plain no-grad forward of the same pairs, one at a time: the score's cost in
forward-equivalents is its time over that forward's time. Batch sizes, then the forward, run in
an interleaved order for ``--rounds`` rounds; medians are reported. One torch thread by default.

    .venv/bin/python benchmarks/bench_qa_batch.py                  # SmolLM2, N=32, B=1,8,32
    .venv/bin/python benchmarks/bench_qa_batch.py --batch-sizes 1 4 --n 8 --model PATH

Writes results/bench/qa-batch-cpu-smollm2-1thread.json (``--out`` to change) and prints the table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _pairs(n: int) -> list[tuple[str, str]]:
    rows = [json.loads(x) for x in (ROOT / "results/qa/triviaqa-150/scores.jsonl").read_text().splitlines()]
    rows = [r for r in rows if r["answer"]][:n]
    if len(rows) < n:
        raise SystemExit(f"only {len(rows)} non-empty answers in the committed TriviaQA run")
    return [(r["question"], r["answer"]) for r in rows]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--n", type=int, default=32, help="questions scored per batch size")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(ROOT / "results/bench/qa-batch-cpu-smollm2-1thread.json"))
    args = ap.parse_args()

    import torch

    from isograd.lm import load_model, qa_prompt, score
    from isograd.lm.prompts import encode_prompt

    torch.set_num_threads(args.threads)
    model, tok = load_model(args.model)
    pairs = _pairs(args.n)
    prompts = [qa_prompt(tok, q) for q, _ in pairs]
    answers = [a for _, a in pairs]

    def run_score(b: int) -> float:
        t = time.perf_counter()
        for i in range(0, len(pairs), b):
            score(model, tok, prompts[i:i + b], answers[i:i + b], batch_size=b)
        return (time.perf_counter() - t) / len(pairs)

    def run_forward() -> float:
        ids = [encode_prompt(tok, p + a) for p, a in zip(prompts, answers)]
        t = time.perf_counter()
        with torch.no_grad():
            for x in ids:
                model(input_ids=torch.tensor([x]))
        return (time.perf_counter() - t) / len(pairs)

    score(model, tok, prompts[:1], answers[:1])  # warm-up
    load_start = os.getloadavg()
    times: dict[str, list[float]] = {str(b): [] for b in args.batch_sizes} | {"forward": []}
    for _ in range(args.rounds):
        for b in args.batch_sizes:
            times[str(b)].append(run_score(b))
        times["forward"].append(run_forward())
    fwd = statistics.median(times["forward"])
    table = [{"batch_size": b, "s_per_question": statistics.median(times[str(b)]),
              "forward_equivalents": statistics.median(times[str(b)]) / fwd,
              "speedup_vs_batch_1": statistics.median(times[str(args.batch_sizes[0])])
              / statistics.median(times[str(b)])}
             for b in args.batch_sizes]
    out = {"model": args.model, "n_questions": args.n, "threads": args.threads,
           "rounds": args.rounds, "forward_s_per_question": fwd, "table": table, "raw": times,
           "torch": torch.__version__, "machine": platform.platform(), "cpu": platform.processor(),
           "load_average_start_end": [load_start, os.getloadavg()],
           "command": "python benchmarks/bench_qa_batch.py " + " ".join(
               f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
               for k, v in vars(args).items() if k != "out")}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"| batch size | s / question | forward-equivalents / question | speed-up vs batch {args.batch_sizes[0]} |")
    print("| --- | --- | --- | --- |")
    for r in table:
        print(f"| {r['batch_size']} | {r['s_per_question']:.3f} | {r['forward_equivalents']:.1f} | "
              f"{r['speedup_vs_batch_1']:.2f}× |")


if __name__ == "__main__":
    main()
