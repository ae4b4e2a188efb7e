"""Benchmark: what the extra signals of `isograd.lm.score` and its per-token trace cost.

All passes run on the same (prompt, answer) pairs: the first ``--pairs`` committed TriviaQA
answers of SmolLM2-135M-Instruct (results/qa/triviaqa/scores.jsonl, short prompt), in one
process, alternating every method once per round (``--runs`` rounds after one warm-up
round), so every ratio is measured under the same machine load. Medians are reported.

  plain       one batched forward + backward of the pairs that fills ``.grad`` (loss = Σ log p)
  norms       the norm pass as `score` ran it before the extra signals: total ‖∇log p‖² only
  signals     the norm pass `score` runs now: per-parameter norms and the embedding-gradient
              hook (everything the extra fields are computed from)
  trace       the per-token pass of ``score(trace=True)``: every answer prefix as a row
  token_loop  the per-token brute force: one forward, then one backward per answer token
              (all weight gradients), squared norms summed (not run by default: slow)

    .venv/bin/python benchmarks/bench_signals.py --pairs 2 --runs 2 --threads 1 --trace-batch 8
    .venv/bin/python benchmarks/bench_signals.py --pairs 8 --runs 8 --methods norms signals
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RATIOS = [("signals", "norms"), ("norms", "plain"), ("signals", "plain"), ("trace", "plain"),
          ("token_loop", "plain"), ("trace", "token_loop")]


def _pairs(n: int, tok) -> list[tuple[list[int], list[int]]]:
    from isograd.lm.prompts import encode_answer, encode_prompt, qa_prompt

    out = []
    with (ROOT / "results/qa/triviaqa/scores.jsonl").open(encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            if not r["answer"]:
                continue
            prompt = qa_prompt(tok, r["question"], "short")
            out.append((encode_prompt(tok, prompt), encode_answer(tok, prompt, r["answer"])))
            if len(out) == n:
                break
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=4)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--trace-batch", type=int, default=16, help="prefix rows per trace pass")
    ap.add_argument("--methods", nargs="+", default=["plain", "norms", "signals", "trace"],
                    choices=["plain", "norms", "signals", "trace", "token_loop"])
    ap.add_argument("--out", default=str(ROOT / "results/bench/signals-cpu-smollm2.json"))
    args = ap.parse_args()

    import torch

    from isograd.lm import load_model
    from isograd.lm.score import Prediction, _make_batch, _norm_pass, _pad_id, _token_logprobs
    from isograd.lm.trace import prefix_pairs

    torch.set_num_threads(args.threads)
    model, tok = load_model()
    pairs = _pairs(args.pairs, tok)
    run = dict(pad=_pad_id(tok), padding_side="right", batch_size=len(pairs), method="auto",
               params=None)
    geo = Prediction.GEOMETRIC
    rows = prefix_pairs(pairs)
    batch = _make_batch(pairs, run["pad"], "right")
    params = list(model.parameters())

    def plain():
        tok_lp, m = _token_logprobs(model, batch)
        (tok_lp.sum(1) / m.sum(1)).sum().backward()
        for p in params:
            p.grad = None

    def token_loop():
        tok_lp, m = _token_logprobs(model, batch)
        idx = m.nonzero().tolist()
        for j, (i, t) in enumerate(idx):
            grads = torch.autograd.grad(tok_lp[i, t].exp(), params, retain_graph=j < len(idx) - 1)
            sum(g.double().square().sum() for g in grads)

    methods = {
        "plain": plain,
        "norms": lambda: _norm_pass(model, pairs, geo, by_param=False, embedding=False, **run),
        "signals": lambda: _norm_pass(model, pairs, geo, by_param=True, embedding=True, **run),
        "trace": lambda: _norm_pass(model, rows, Prediction.FIRST_TOKEN, by_param=False,
                                    embedding=False, **{**run, "batch_size": args.trace_batch}),
    }
    methods["token_loop"] = token_loop
    methods = {k: methods[k] for k in args.methods}
    times: dict[str, list[float]] = {k: [] for k in methods}
    for r in range(args.runs + 1):
        for name, fn in methods.items():
            t0 = time.perf_counter()
            fn()
            if r:  # round 0 is the warm-up
                times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    res = {
        "command": "benchmarks/bench_signals.py " + " ".join(
            f"--{k.replace('_', '-')} {' '.join(v) if isinstance(v, list) else v}"
            for k, v in vars(args).items() if k != "out"),
        "model": "SmolLM2-135M-Instruct fp32", "device": "cpu", "threads": args.threads,
        "machine": platform.processor() or platform.machine(),
        "pairs": len(pairs), "prompt_tokens": [len(p) for p, _ in pairs],
        "answer_tokens": [len(a) for _, a in pairs], "prefix_rows": len(rows),
        "times_s": times, "median_s": med,
        "ratios": {f"{a} / {b}": med[a] / med[b] for a, b in RATIOS if a in med and b in med},
    }
    print(f"{len(pairs)} pairs, answer tokens {res['answer_tokens']}, prompt tokens "
          f"{res['prompt_tokens']}, {len(rows)} prefix rows, {args.threads} thread(s)")
    print("| pass | median s |\n|---|---:|")
    for k, v in med.items():
        print(f"| {k} | {v:.2f} |")
    for k, v in res["ratios"].items():
        print(f"{k}: {v:.3f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
