"""Benchmark: load time, peak memory and seconds per question to answer and to score, per model.

The first ``--n`` questions of a packaged dataset are answered greedily (`greedy_answers`,
``--batch-size`` at a time, at most ``--max-new-tokens`` tokens) in the model's prompt (``base``
for a tokenizer without a chat template, else ``short``), then their (prompt, answer) pairs are
scored (`score`, default engine, same batch size): the two stages of ``isograd qa``. Peak
memory is the process's maximum resident set size after each stage; the machine's load
average (1 min) at the start and the end says how shared the CPU was. One torch thread.

    .venv/bin/python benchmarks/bench_model_cost.py --model gemma3-270m
    .venv/bin/python benchmarks/bench_model_cost.py --model smollm2-135m [--prompt base]

Writes results/bench/model-cost-cpu-MODEL-PROMPT-1thread.json (``--out`` to change), prints it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _peak_gb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2)  # Linux: KiB


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="gemma3-270m")
    ap.add_argument("--dataset", default="triviaqa")
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--prompt", default=None, help="prompt style (default: by chat template)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    import torch

    from isograd.lm import greedy_answers, load_model, qa_prompt, score
    from isograd.lm.prompts import has_chat_template
    from isograd.qa.datasets import load_dataset

    torch.set_num_threads(1)
    load_avg_start = os.getloadavg()[0]
    questions = load_dataset(args.dataset, limit=args.n)
    t = time.perf_counter()
    model, tok = load_model(args.model)
    load_s, load_gb = time.perf_counter() - t, _peak_gb()
    style = args.prompt or ("short" if has_chat_template(tok) else "base")
    prompts = [qa_prompt(tok, q.question, style) for q in questions]
    t = time.perf_counter()
    ans = greedy_answers(model, tok, prompts, max_new_tokens=args.max_new_tokens,
                         batch_size=args.batch_size)
    gen_s, gen_gb = (time.perf_counter() - t) / len(prompts), _peak_gb()
    pairs = [(p, list(a.token_ids)) for p, a in zip(prompts, ans) if a.token_ids]
    t = time.perf_counter()
    score(model, tok, [p for p, _ in pairs], [a for _, a in pairs], batch_size=args.batch_size)
    score_s, score_gb = (time.perf_counter() - t) / len(pairs), _peak_gb()
    out = {"model": args.model, "dataset": args.dataset, "n": len(prompts),
           "scored": len(pairs), "prompt": style, "batch_size": args.batch_size,
           "max_new_tokens": args.max_new_tokens, "torch_threads": 1,
           "parameters": sum(p.numel() for p in model.parameters()),
           "load_s": round(load_s, 2), "generate_s_per_question": round(gen_s, 3),
           "score_s_per_question": round(score_s, 3), "peak_rss_gb_after_load": load_gb,
           "peak_rss_gb_after_generate": gen_gb, "peak_rss_gb_after_score": score_gb,
           "mean_answer_tokens": sum(len(a.token_ids) for a in ans) / len(ans),
           "load_average_start_end": [load_avg_start, os.getloadavg()[0]],
           "cpus": os.cpu_count(), "machine": platform.machine(), "torch": torch.__version__}
    name = f"model-cost-cpu-{args.model}-{style}-1thread.json"
    path = Path(args.out or ROOT / "results/bench" / name)
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
