"""How much next-token mass LM-Polygraph's P(True) read-out sees on its two verdict words.

Reads results/polygraph/values.jsonl (written by crosscheck.py: ``p_true`` = −log p("True"),
``p_true_renormalised`` = −log(p("True") / (p("True") + p("False")))), recovers p("True") and
p("False") per row, and prints their medians and how often p("True") > p("False").
Run from the repository root: ``python results/polygraph/verdict_mass.py``; the output is
committed as verdict_mass.txt.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    rows = [json.loads(line) for line in (HERE / "values.jsonl").open() if line.strip()]
    p_true = [math.exp(-r["p_true"]) for r in rows]
    # −log renormalised = log(p_T + p_F) − log p_T  =>  p_F = p_T·(exp(r) − 1)
    p_false = [t * math.expm1(r["p_true_renormalised"]) for t, r in zip(p_true, rows)]
    both = [t + f for t, f in zip(p_true, p_false)]
    lines = [
        f"rows: {len(rows)}",
        f"median p('True') as the reply's first token: {statistics.median(p_true):.4f}",
        f"median p('False'): {statistics.median(p_false):.4f}",
        f"median p('True') + p('False'): {statistics.median(both):.4f} "
        f"(max {max(both):.4f})",
        f"rows with p('True') > p('False'): {sum(t > f for t, f in zip(p_true, p_false))}",
    ]
    text = "\n".join(lines) + "\n"
    (HERE / "verdict_mass.txt").write_text(text)
    print(text, end="")


if __name__ == "__main__":
    main()
