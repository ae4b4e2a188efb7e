"""lm.score in bf16 / fp16 against an fp64 copy of the same weights, on tiny Llama, GPT-2, Qwen2.

For each architecture, half dtype, seed and norm engine: the model is built in the half dtype
and copied to float64 (the half weights are exactly representable, so both score the same
function; only the arithmetic differs). Prints a markdown table of the largest relative errors
over seeds and pairs, and writes them as JSON.

    python benchmarks/score_precision.py [--seeds 3] [--out results/bench/score-precision-cpu.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the tiny models and tokenizer of the test suite

from tests.lm.tiny_lm import tiny_model, tiny_tokenizer  # noqa: E402
from tests.problems import rel_err  # noqa: E402

from isograd.lm import qa_prompt, score  # noqa: E402

QUESTIONS = ["Who?", "What is the capital of France?", "2+2?", "Why is the sky blue?"]
ANSWERS = [" Paris", " four", " no idea at all", " x"]
KINDS = ("llama", "gpt2", "qwen2")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
FIELDS = ("p", "log_p", "grad_log_p", "epistemic", "aleatoric")


def measure(kind: str, dtype: torch.dtype, seed: int, method: str) -> dict[str, float]:
    """Relative errors of every score field, half vs fp64 copy, one model."""
    tok = tiny_tokenizer()
    prompts = [qa_prompt(tok, q) for q in QUESTIONS]
    half = tiny_model(kind, seed=seed, dtype=dtype)
    ref = copy.deepcopy(half).to(torch.float64)
    s = score(half, tok, prompts, ANSWERS, method=method)
    r = score(ref, tok, prompts, ANSWERS, method=method)
    return {f: rel_err(getattr(s, f).double(), getattr(r, f)) for f in FIELDS}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "results/bench/score-precision-cpu.json"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows = []
    for kind in KINDS:
        for name, dtype in DTYPES.items():
            for method in ("ghost", "loop"):
                errs = [measure(kind, dtype, s, method) for s in range(args.seeds)]
                rows.append({"model": kind, "dtype": name, "method": method,
                             **{f: max(e[f] for e in errs) for f in FIELDS}})
    print("| model | dtype | engine | " + " | ".join(FIELDS) + " |")
    print("|---|---|---|" + "---:|" * len(FIELDS))
    for r in rows:
        print(f"| {r['model']} | {r['dtype']} | {r['method']} | "
              + " | ".join(f"{r[f]:.1e}" for f in FIELDS) + " |")
    for name in DTYPES:
        worst = {f: max(r[f] for r in rows if r["dtype"] == name) for f in FIELDS}
        print(f"worst {name}: " + ", ".join(f"{f} {v:.1e}" for f, v in worst.items()))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"command": "python benchmarks/score_precision.py "
                               f"--seeds {args.seeds}", "torch": torch.__version__,
                               "seeds": args.seeds, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
