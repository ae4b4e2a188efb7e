"""Throughput of `isograd score` on the CPU: 1 process x 2 threads against 2 processes x 1 thread.

Scores the 40 TruthfulQA question/answer pairs of benchmarks/data/truthfulqa40.jsonl (the first
40 rows of TruthfulQA.csv: Question, Best Answer; Apache-2.0) with SmolLM2-135M-Instruct
(``--as-question``), each configuration as a whole command (start, model load and merge
included), alternating the two configurations round after round because the machine is shared:
a slow spell then hits both. Also checks the done-when point: the merged two-process file equals
the single-process one (same ids and answers, p and epistemic within 1e-6 relative).

    python benchmarks/bench_distributed.py --rounds 1 --out results/bench/distributed-cpu.json
    python benchmarks/bench_distributed.py --rounds 1 --single-threads 1 --batch-size 1 \
        --out results/bench/distributed-equality-cpu.json   # the split alone differs
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PAIRS = HERE / "data" / "truthfulqa40.jsonl"


def commands(pairs: Path, out: Path, batch_size: int, threads: int = 2) -> dict[str, list[str]]:
    bin_dir = Path(sys.executable).parent
    score = ["score", "--input", str(pairs), "--as-question", "--batch-size", str(batch_size),
             "--quiet"]
    return {
        f"1 process x {threads} threads": [str(bin_dir / "isograd"), *score, "--threads", str(threads),
                                  "--out", str(out / "one.jsonl")],
        "2 processes x 1 thread": [str(bin_dir / "torchrun"), "--standalone",
                                   "--nproc-per-node", "2", "--no-python",
                                   str(bin_dir / "isograd"), *score, "--threads", "1",
                                   "--out", str(out / "two.jsonl")],
    }


def timed(cmd: list[str], threads: int) -> float:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), HF_HUB_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false")
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    return dt


def compare(one: Path, two: Path) -> dict:
    a = [json.loads(x) for x in one.read_text().splitlines()]
    b = [json.loads(x) for x in two.read_text().splitlines()]
    same = [r["id"] for r in a] == [r["id"] for r in b] and all(
        r["answer"] == s["answer"] for r, s in zip(a, b))
    rel = {k: max(abs(r[k] - s[k]) / abs(r[k]) for r, s in zip(a, b))
           for k in ("p", "epistemic")}
    return {"rows": len(a), "same_ids_and_answers": same, "max_rel_diff": rel,
            "equal_within_1e-6": same and max(rel.values()) <= 1e-6}


def report(args: argparse.Namespace, n: int, times: dict[str, list[float]],
           check: dict | None) -> dict:
    """The JSON so far (written after every run: an interrupted benchmark keeps its runs)."""
    best = {k: min(v) for k, v in times.items()}
    base = best.get(f"1 process x {args.single_threads} threads")
    return {
        "command": "python benchmarks/bench_distributed.py " + " ".join(sys.argv[1:]),
        "pairs": n, "model": "smollm2-135m", "batch_size": args.batch_size,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "load_average": os.getloadavg(),
                    "note": "shared machine: configurations alternate run by run; each time "
                            "is a whole command (start, model load, scoring, merge)"},
        "seconds": times,
        "pairs_per_second_best": {k: n / v for k, v in best.items()},
        "speedup_vs_1_process_best": {k: base / v for k, v in best.items()} if base else None,
        "merged_equals_single": check,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--single-threads", type=int, default=2,
                    help="threads of the single process (1, with --batch-size 1: the merged "
                         "output must then equal it exactly, nothing but the split differs)")
    ap.add_argument("--out", type=Path, default=Path("results/bench/distributed-cpu.json"))
    args = ap.parse_args()
    n = sum(1 for _ in PAIRS.open())
    times: dict[str, list[float]] = {}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for name, cmd in commands(PAIRS, Path(tmp), args.batch_size,
                                      args.single_threads).items():
                Path(cmd[-1]).unlink(missing_ok=True)  # a fresh run each time; the last stays
                dt = timed(cmd, args.single_threads if name.startswith("1") else 1)
                times.setdefault(name, []).append(dt)
                print(f"round {r + 1} {name}: {dt:.1f} s ({n / dt:.3f} pairs/s)", flush=True)
                args.out.write_text(json.dumps(report(args, n, times, None), indent=2) + "\n")
        check = compare(Path(tmp) / "one.jsonl", Path(tmp) / "two.jsonl")
    result = report(args, n, times, check)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["speedup_vs_1_process_best"]), json.dumps(check))
    if not check["equal_within_1e-6"]:
        sys.exit("the merged two-process output differs from the single-process output")


if __name__ == "__main__":
    main()
