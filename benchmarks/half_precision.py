"""Relative error of half-precision squared gradient norms against float64 on the same weights.

For tiny Llama, GPT-2 and Qwen2 models (built from configs, tests/problems.py) the model is cast
to bfloat16 or float16; an exact float64 copy of those rounded weights is the reference (loop
engine). Each engine then runs in the half dtype: forward and backward in that dtype, squared
terms and sums in float32/float64. Prints a table and writes JSON.

    python benchmarks/half_precision.py --out results/bench/half-precision-cpu.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from tests.problems import HALF, HALF_ARCHS, half_vs_fp64  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, help="write the table as JSON here")
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows = []
    print(f"{'model':8} {'dtype':5} {'method':6} {'padding':10} {'rel.err vs fp64':>16}")
    for arch in HALF_ARCHS:
        for dtype in HALF:
            for method in ("ghost", "loop"):
                for side in ("right", "left"):
                    err = half_vs_fp64(arch, dtype, method, side)
                    rows.append(dict(model=arch, dtype=dtype, method=method, padding=side,
                                     rel_err=err))
                    print(f"{arch:8} {dtype:5} {method:6} {side:10} {err:16.2e}")
    worst = {d: max(r["rel_err"] for r in rows if r["dtype"] == d) for d in HALF}
    print("worst:", ", ".join(f"{d} {v:.2e}" for d, v in worst.items()))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(dict(torch=torch.__version__, rows=rows, worst=worst),
                                       indent=1) + "\n")


if __name__ == "__main__":
    main()
