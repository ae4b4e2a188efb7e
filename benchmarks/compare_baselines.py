"""Compare the semantic-entropy entailment back-ends on real samples (agreement and time), or
time every baseline per question (`isograd.qa.baselines.compare`).

    OMP_NUM_THREADS=1 python benchmarks/compare_baselines.py --dataset triviaqa --limit 20 \\
        --out se_backends.json
    OMP_NUM_THREADS=1 python benchmarks/compare_baselines.py --dataset triviaqa --limit 5 \\
        --time-baselines --out times.json
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

from isograd.lm import load_model
from isograd.qa.baselines.compare import compare_backends, time_baselines
from isograd.qa.datasets import load_dataset


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--dataset", default="triviaqa")
    ap.add_argument("--limit", type=int, default=20)
    ap.add_argument("--backends", default="ngram,embedding,llm")
    ap.add_argument("--nli", default=None)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True)
    ap.add_argument("--time-baselines", action="store_true",
                    help="instead: time every baseline (defaults) per question")
    args = ap.parse_args(argv)
    model, tok = load_model(args.model)
    qs = load_dataset(args.dataset, limit=args.limit)
    if args.time_baselines:
        res = time_baselines(model, tok, qs, k=args.k, seed=args.seed)
        with open(args.out, "w") as f:
            json.dump(res, f, indent=1)
        print(json.dumps(res, indent=1))
        return
    res = compare_backends(model, tok, qs, backends=args.backends.split(","), k=args.k,
                           seed=args.seed, nli=args.nli)
    with open(args.out, "w") as f:
        json.dump(res, f, indent=1)
    print(json.dumps(res["summary"], indent=1))


if __name__ == "__main__":
    main()
