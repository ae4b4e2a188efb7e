"""Benchmark: per-example squared gradient norms, time and peak memory per engine.

Methods (each in a fresh subprocess, so peak memory is its own):
  plain   one batched forward + backward that fills ``.grad`` (the reference cost)
  loop    ``sq_grad_norms(method="loop")``: one backward per example
  ghost   ``sq_grad_norms(method="ghost")``: one weightless backward for the batch
  func    torch.func: ``vmap(grad(...))`` per-example gradients, then their norms
  opacus  Opacus GradSampleModule (hooks mode) per-example gradients, then their norms

Timing: after one warm-up call, each worker alternates method and plain runs (``--runs`` of
each) and reports both medians and their ratio, so a ratio is measured under the same machine
load. Peak memory: on CPU the process's peak resident set (VmHWM, reset through
/proc/self/clear_refs just before the measured runs) and its increase over the resident set
before them (model and batch already loaded); on CUDA ``torch.cuda.max_memory_allocated``.
The plain pass's memory is the plain worker's. Every worker also returns its norms, so the
table shows each method's largest relative difference to the loop engine.

Models: ``smollm2`` (SmolLM2-135M-Instruct, tied embeddings), ``mlp`` (784-1024-1024-10),
``llama-1b-random`` (a randomly initialised Llama-3.2-1B-shaped model, tied), ``tiny`` (smoke).
``fn``: ``sequence`` = sum of next-token log-probs over the whole sequence (default);
``answer`` = over the last ``--answer-len`` tokens only (logits kept only there); MLP: log of
the predicted class's probability. Inputs are random token ids / Gaussian features (seeded).

    .venv/bin/python benchmarks/bench_norms.py                       # SmolLM2 T=64, T=256, MLP
    .venv/bin/python benchmarks/bench_norms.py --model smollm2 --seq 64 --methods plain ghost loop
    .venv/bin/python benchmarks/bench_norms.py --device cuda --model llama-1b-random
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("plain", "loop", "ghost", "func", "opacus")
DEFAULT_BATCH = {"smollm2": 8, "mlp": 256, "llama-1b-random": 16, "tiny": 4}
DEFAULT_SEQ = {"smollm2": [64, 256], "mlp": [0], "llama-1b-random": [256], "tiny": [16]}


# ---- worker (runs in its own process) ------------------------------------------------


def _build(cfg: dict):
    """(model, batch, fn) on cfg['device']."""
    import torch

    dev = torch.device(cfg["device"])
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp64": torch.float64}[cfg["dtype"]]
    torch.manual_seed(0)
    name, b, t = cfg["model"], cfg["batch"], cfg["seq"]
    if name == "mlp":
        from torch import nn

        model = nn.Sequential(nn.Linear(784, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(),
                              nn.Linear(1024, 10)).to(dev, dtype).eval()
        x = torch.randn(b, 784, generator=torch.Generator().manual_seed(1)).to(dev, dtype)

        def mlp_fn(m, x):
            return m(x).log_softmax(-1).max(-1).values

        return model, x, mlp_fn
    if name == "smollm2":
        from isograd.lm import load_model

        model, _ = load_model(dtype=cfg["dtype"], device=cfg["device"])
    else:
        from transformers import LlamaConfig, LlamaForCausalLM

        if name == "llama-1b-random":  # the shapes of Llama-3.2-1B, random weights
            lc = LlamaConfig(vocab_size=128256, hidden_size=2048, intermediate_size=8192,
                             num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
                             max_position_embeddings=4096, rope_theta=500000.0,
                             tie_word_embeddings=True)
        else:
            lc = LlamaConfig(vocab_size=512, hidden_size=64, intermediate_size=128,
                             num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                             tie_word_embeddings=True)
        with dev:
            model = LlamaForCausalLM(lc).to(dtype)
        model.eval()
    vocab = model.config.vocab_size
    ids = torch.randint(0, vocab, (b, t), generator=torch.Generator().manual_seed(1)).to(dev)
    batch = {"input_ids": ids}  # unpadded: no attention mask (torch.func cannot vmap its checks)
    span = cfg["answer_len"] if cfg["fn"] == "answer" else t - 1

    def lm_fn(m, batch):
        ids = batch["input_ids"]
        out = m(input_ids=ids, logits_to_keep=span + 1)
        logp = out.logits[:, :-1].float().log_softmax(-1)
        return logp.gather(2, ids[:, -span:, None])[..., 0].sum(1)

    return model, batch, lm_fn


def _func_norms(model, fn, batch, chunk):
    import torch
    from torch.func import functional_call, grad, vmap
    from torch.utils._pytree import tree_map

    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = dict(model.named_buffers())

    def one(p, ex):
        one_batch = tree_map(lambda x: x.unsqueeze(0), ex)
        call = lambda *a, **k: functional_call(model, (p, buffers), a, k)  # noqa: E731
        return fn(call, one_batch)[0]

    total = None
    with torch.no_grad():  # torch.func still differentiates
        g = vmap(grad(one), in_dims=(None, 0), chunk_size=chunk)(params, batch)
    for v in g.values():
        s = v.reshape(v.shape[0], -1).double().square().sum(1)
        total = s if total is None else total + s
    return total.cpu()


def _method(cfg: dict, model, batch, fn):
    """A zero-argument callable running the method once; returns norms [B] or None."""
    from isograd import sq_grad_norms

    params = [p for p in model.parameters()]
    for p in params:
        p.requires_grad_(True)
    m = cfg["method"]
    if m == "plain":
        def run():
            fn(model, batch).sum().backward()
            for p in params:
                p.grad = None
        return run
    if m in ("loop", "ghost"):
        return lambda: sq_grad_norms(model, fn, batch, method=m)
    if m == "func":
        return lambda: _func_norms(model, fn, batch, cfg.get("func_chunk") or None)
    if m == "opacus":
        from opacus import GradSampleModule

        gsm = GradSampleModule(model, batch_first=True, loss_reduction="sum")

        def run():
            gsm.enable_hooks()
            gsm.train()  # Opacus records activations only in train mode (no dropout here)
            fn(gsm, batch).sum().backward()
            gsm.eval()
            gsm.disable_hooks()  # the interleaved plain passes must not feed Opacus's hooks
            total = 0
            for p in gsm.parameters():
                gs = getattr(p, "grad_sample", None)
                if gs is not None:
                    total = total + gs.reshape(gs.shape[0], -1).double().square().sum(1)
            gsm.zero_grad(set_to_none=True)
            return total.cpu()
        return run
    raise ValueError(f"unknown method {m!r}; allowed: {', '.join(METHODS)}")


def _rss_mb() -> tuple[float, float]:
    """(current RSS, peak RSS since the last reset) in MiB, from /proc/self/status."""
    vals = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            vals[line[:5]] = int(line.split()[1]) / 1024
    return vals["VmRSS"], vals["VmHWM"]


def _reset_peak() -> bool:
    try:  # Linux >= 4.0: "5" resets the peak RSS to the current RSS
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _trim() -> None:
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


def worker(cfg: dict) -> dict:
    import torch

    if cfg.get("threads"):
        torch.set_num_threads(cfg["threads"])
    cuda = cfg["device"].startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    model, batch, fn = _build(cfg)
    nparams = sum(p.numel() for p in model.parameters())
    if cfg["method"] in ("func", "opacus"):  # B per-example copies of every parameter
        need = cfg["batch"] * nparams * 4 * 2
        avail = (torch.cuda.mem_get_info()[0] if cuda else
                 int(Path("/proc/meminfo").read_text().split("MemAvailable:")[1].split()[0]) * 1024)
        if need > 0.8 * avail:
            return {"status": f"skipped: needs ~{need / 2**30:.0f} GiB, {avail / 2**30:.0f} free"}
    run = _method(cfg, model, batch, fn)
    plain = _method({**cfg, "method": "plain"}, model, batch, fn)

    def timed(f):
        sync()
        t0 = time.perf_counter()
        out = f()
        sync()
        return time.perf_counter() - t0, out

    _, norms = timed(run)  # warm-up (lazy initialisation, allocator)
    _trim()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated() / 2**20
    else:
        base = _rss_mb()[0]
        _reset_peak()
    times, plain_times = [], []
    load = [os.getloadavg()[0]]
    for i in range(cfg["runs"]):
        times.append(timed(run)[0])
        if i == 0:  # peak memory of the method alone
            peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else _rss_mb()[1]
        if cfg["method"] != "plain":
            plain_times.append(timed(plain)[0])
    load.append(os.getloadavg()[0])
    med = statistics.median(times)
    pmed = statistics.median(plain_times) if plain_times else med
    return {
        "status": "ok", "params": nparams, "times_s": times, "median_s": med,
        "plain_times_s": plain_times or times, "plain_median_s": pmed, "ratio_to_plain": med / pmed,
        "peak_mb": peak, "base_mb": base, "extra_mb": peak - base, "loadavg": load,
        "norms": None if norms is None else [float(v) for v in norms],
        "threads": torch.get_num_threads(),
    }


# ---- driver --------------------------------------------------------------------------


def _run_worker(cfg: dict, timeout: float) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(cfg)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"status": f"failed: timeout after {timeout:.0f} s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    return {"status": f"failed: {tail[:200]}"}


def _rel(a: list[float] | None, b: list[float] | None) -> float | None:
    if not a or not b:
        return None
    return max(abs(x - y) / max(abs(y), 1e-300) for x, y in zip(a, b))


def _table(rows: list[dict]) -> str:
    head = (f"{'config':<24} {'method':<7} {'median s':>9} {'x plain':>8} {'peak MiB':>9} "
            f"{'+MiB':>8} {'rel.diff':>9}  status")
    lines = [head, "-" * len(head)]
    for r in rows:
        def fmt(k: str, f: str, r: dict = r) -> str:
            return f.format(r[k]) if r["status"] == "ok" and r.get(k) is not None else "-"

        lines.append(
            f"{r['config']:<24} {r['method']:<7} {fmt('median_s', '{:9.3f}'):>9} "
            f"{fmt('ratio_to_plain', '{:8.2f}'):>8} {fmt('peak_mb', '{:9.0f}'):>9} "
            f"{fmt('extra_mb', '{:8.0f}'):>8} {fmt('rel_diff_vs_loop', '{:9.1e}'):>9}  "
            f"{r['status']}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", nargs="+", default=["smollm2", "mlp"],
                    choices=["smollm2", "mlp", "llama-1b-random", "tiny"])
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    ap.add_argument("--batch", type=int, help=f"batch size (default per model: {DEFAULT_BATCH})")
    ap.add_argument("--seq", type=int, nargs="+", help="sequence lengths (default per model)")
    ap.add_argument("--fn", choices=["sequence", "answer"], default="sequence")
    ap.add_argument("--answer-len", type=int, default=16)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp64"])
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--func-chunk", type=int, default=0, help="vmap chunk size for func (0: B)")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds per worker")
    ap.add_argument("--out", type=Path, help="JSON path (default results/bench/norms-...json)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))), flush=True)
        return 0
    rows = []
    for model in args.model:
        for seq in args.seq or DEFAULT_SEQ[model]:
            if model == "mlp":
                seq = 0
            b = args.batch or DEFAULT_BATCH[model]
            name = f"{model} B={b}" + (f" T={seq}" if seq else "")
            for method in args.methods:
                cfg = {"model": model, "batch": b, "seq": seq, "method": method,
                       "device": args.device, "dtype": args.dtype, "runs": args.runs,
                       "fn": args.fn, "answer_len": args.answer_len, "threads": args.threads,
                       "func_chunk": args.func_chunk}
                t0 = time.time()
                res = _run_worker(cfg, args.timeout)
                rows.append({"config": name, **cfg, **res, "wall_s": time.time() - t0})
                print(_table(rows[-1:]).splitlines()[-1], flush=True)
            group = [r for r in rows if r["config"] == name]
            ref = next((r.get("norms") for r in group if r["method"] == "loop"), None)
            plain = next((r for r in group if r["method"] == "plain" and r["status"] == "ok"), None)
            for r in group:
                r["rel_diff_vs_loop"] = _rel(r.get("norms"), ref)
                if plain and r["status"] == "ok":
                    r["peak_vs_plain"] = r["peak_mb"] / plain["peak_mb"]
    print()
    print(_table(rows))
    out = args.out or ROOT / "results" / "bench" / (
        f"norms-{args.device.split(':')[0]}-{time.strftime('%Y%m%d-%H%M%S')}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    import torch

    meta = {"command": " ".join([Path(sys.executable).name, *sys.argv]),
            "torch": torch.__version__, "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(), "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
