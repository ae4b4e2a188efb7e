"""`isograd serve` under load: what uncertainty costs over plain generation, what batching gains.

Serves the embedded SmolLM2-135M-Instruct on the CPU three ways, each a fresh server process
(`isograd.serve.run`) with ONE torch thread pinned to CPU 0, while this client (asyncio +
httpx) runs pinned to CPU 1 (on a 2-core machine: the server one core, the client the other):

* ``uncertainty``: the default server (greedy answers + one score pass per batch);
* ``plain``: the same server without the score pass (`ServeOptions.uncertainty=False`): plain
  greedy generation, the baseline;
* ``uncertainty, batch 1``: the default server with ``max_batch_size=1`` (one request at a time).

The same greedy chat requests (the 16 questions of bench_generate.py, cycled) are sent at
concurrency 1, 4 and 16; requests/s and p50/p95 latency are printed with the ratios
uncertainty / plain and the batching gain at concurrency 16, and written as JSON. Run it with
nothing else on the machine.

    python benchmarks/bench_serve.py [--requests 32] [--max-tokens 16]
    python benchmarks/bench_serve.py --smoke   # a tiny model, a few requests: checks it runs
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from bench_generate import QUESTIONS

ROOT = Path(__file__).resolve().parents[1]
SERVER = "import json, sys; from isograd.serve import run; run(**json.loads(sys.argv[1]))"
VARIANTS = {"uncertainty": {"uncertainty": True}, "plain": {"uncertainty": False},
            "uncertainty, batch 1": {"uncertainty": True, "max_batch_size": 1}}


def pin(cpu: int) -> None:
    """Run this process on one CPU (where the OS allows it)."""
    if hasattr(os, "sched_setaffinity") and os.cpu_count() and os.cpu_count() > cpu:
        os.sched_setaffinity(0, {cpu})


def start_server(model: str, port: int, variant: dict, args) -> subprocess.Popen:
    kw = {"model": model, "port": port, "threads": 1, "log_level": "warning",
          "max_batch_size": args.max_batch_size, "max_wait_ms": args.max_wait_ms,
          "queue_size": 256, "max_tokens_cap": max(args.max_tokens, 16), **variant}
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-c", SERVER, json.dumps(kw)], env=env,
                            preexec_fn=lambda: pin(0))
    deadline = time.monotonic() + 600
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with status {proc.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise SystemExit("the server did not come up")
        time.sleep(0.5)


async def load(url: str, model: str, questions: list[str], concurrency: int,
               max_tokens: int) -> tuple[float, list[float], list[str]]:
    """Send every question with at most `concurrency` in flight: (seconds, latencies, texts)."""
    gate = asyncio.Semaphore(concurrency)
    lat: list[float] = [0.0] * len(questions)
    texts: list[str] = [""] * len(questions)

    async def one(c: httpx.AsyncClient, i: int, q: str) -> None:
        async with gate:
            t = time.perf_counter()
            r = await c.post(url + "/v1/chat/completions", json={
                "model": model, "messages": [{"role": "user", "content": q}],
                "temperature": 0, "max_tokens": max_tokens})
            lat[i] = time.perf_counter() - t
            if r.status_code != 200:
                raise SystemExit(f"request {i}: {r.status_code} {r.text}")
            texts[i] = r.json()["choices"][0]["message"]["content"]

    async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=64)) as c:
        start = time.perf_counter()
        await asyncio.gather(*(one(c, i, q) for i, q in enumerate(questions)))
        return time.perf_counter() - start, lat, texts


def pct(xs: list[float], q: float) -> float:
    return statistics.quantiles(xs, n=100, method="inclusive")[q - 1] if len(xs) > 1 else xs[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--requests", type=int, default=32, help="Requests per measurement.")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--max-batch-size", type=int, default=16)
    ap.add_argument("--max-wait-ms", type=float, default=10.0)
    ap.add_argument("--port", type=int, default=8765)
    ap.add_argument("--smoke", action="store_true", help="A tiny saved model, 4 requests.")
    ap.add_argument("--out", default="results/bench/serve-cpu-smollm2.json")
    args = ap.parse_args()
    pin(1)
    model, tmp = args.model, None
    if args.smoke:
        sys.path.insert(0, str(ROOT))
        from tests.lm.tiny_lm import save_tiny

        tmp = tempfile.TemporaryDirectory()
        model = str(save_tiny(Path(tmp.name) / "tiny"))
        args.requests, args.max_tokens = 4, 4
    questions = [QUESTIONS[i % len(QUESTIONS)] for i in range(args.requests)]
    rows, texts = [], {}
    for name, variant in VARIANTS.items():
        conc = [c for c in args.concurrency if name != "uncertainty, batch 1"
                or c == max(args.concurrency)]
        proc = start_server(model, args.port, variant, args)
        url = f"http://127.0.0.1:{args.port}"
        try:
            asyncio.run(load(url, model, questions[:2], 1, args.max_tokens))  # warm-up
            for c in conc:
                secs, lat, got = asyncio.run(load(url, model, questions, c, args.max_tokens))
                texts.setdefault(name, got)
                rows.append({"variant": name, "concurrency": c, "requests": len(questions),
                             "seconds": secs, "req_per_s": len(questions) / secs,
                             "p50_s": pct(lat, 50), "p95_s": pct(lat, 95)})
                print(f"{name:>22} c={c:<3} {rows[-1]['req_per_s']:7.2f} req/s  p50 "
                      f"{rows[-1]['p50_s']:.3f} s  p95 {rows[-1]['p95_s']:.3f} s", flush=True)
        finally:
            proc.terminate()
            proc.wait(timeout=120)
    if len({tuple(v) for v in texts.values()}) != 1:
        raise SystemExit("the answers differ between the servers")
    by = {(r["variant"], r["concurrency"]): r for r in rows}
    top = max(args.concurrency)
    ratios = {f"c{c}": {"plain_over_uncertainty_req_per_s":
                        by["plain", c]["req_per_s"] / by["uncertainty", c]["req_per_s"],
                        "uncertainty_over_plain_p50":
                        by["uncertainty", c]["p50_s"] / by["plain", c]["p50_s"]}
              for c in args.concurrency}
    gain = by["uncertainty", top]["req_per_s"] / by["uncertainty, batch 1", top]["req_per_s"]
    print("\n| concurrency | uncertainty req/s | plain req/s | cost (plain / uncertainty) |"
          "\n|---:|---:|---:|---:|")
    for c in args.concurrency:
        print(f"| {c} | {by['uncertainty', c]['req_per_s']:.2f} | {by['plain', c]['req_per_s']:.2f}"
              f" | {ratios[f'c{c}']['plain_over_uncertainty_req_per_s']:.2f}x |")
    print(f"batching gain at concurrency {top}: {gain:.2f}x the requests/s of one at a time "
          f"(max_batch_size {args.max_batch_size} vs 1); identical answers in all servers")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "command": "python benchmarks/bench_serve.py " + " ".join(sys.argv[1:]),
        "model": args.model if not args.smoke else "tiny (smoke)", "server_threads": 1,
        "server_cpu": 0, "client_cpu": 1, "max_tokens": args.max_tokens,
        "max_batch_size": args.max_batch_size, "max_wait_ms": args.max_wait_ms,
        "load_average": os.getloadavg(), "rows": rows, "ratios": ratios,
        f"batching_gain_c{top}": gain}, indent=1) + "\n")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
