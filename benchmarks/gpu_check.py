"""GPU check of the norm engines and `isograd.lm.score`: exactness in bf16, speed and memory of a
~1B-parameter Llama-architecture model, and scoring end to end. Needs only torch and
transformers (no downloads, no network); writes one JSON and exits non-zero if any check fails.

    benchmarks/gpu_check.sh                      # CUDA, Llama-3.2-1B-shaped random model
    benchmarks/gpu_check.sh --device cpu --size tiny --out /tmp/gpu_check.json   # dry run

Sections of the JSON:
  exactness  tiny Llama in bf16 on the device: ghost and loop vs the loop engine on a float64
             CPU copy of the same weights (relative errors; must be <= the bf16 tolerance);
  speed      the large model in bf16, B x T random tokens: plain forward+backward, ghost and
             loop, medians of `--repeats` timed runs after a warm-up, ratios to plain measured
             in this run, peak device memory of each; ghost vs loop agreement;
  score      `isograd.lm.score` on the large model on the device (word-level tokenizer built
             in code, answers given as token ids): finite, and equal to the loop engine's;
  fsdp       FSDP2 with world size 1 on the device: a copy of the large model under
             ``fully_shard`` (per decoder layer and at the root) gives the unsharded model's ghost
             norms; time and peak memory against the unsharded ghost run of this run; the loop
             engine refused on it.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import time
import traceback
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from isograd import sq_grad_norms  # noqa: E402

BF16_TOLERANCE = 2e-2  # docs/performance.md, measured on CPU by benchmarks/half_precision.py

SIZES = {
    # Llama-3.2-1B's shape (1.24e9 parameters, tied embeddings), randomly initialised
    "1b": dict(vocab_size=128256, hidden_size=2048, intermediate_size=8192,
               num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
               tie_word_embeddings=True, batch=16, seq=256),
    "tiny": dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
                 batch=4, seq=32),
}


def llama(shape: dict, device: str, dtype: torch.dtype, seed: int = 0) -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(**{k: v for k, v in shape.items() if k not in ("batch", "seq")},
                      max_position_embeddings=4096, bos_token_id=1, eos_token_id=2)
    torch.manual_seed(seed)
    with torch.device(device):
        model = LlamaForCausalLM(cfg)
    return model.to(dtype).eval()


def logprob_sum(model: torch.nn.Module, batch: dict) -> torch.Tensor:
    """Summed next-token log-probabilities per example, [B] (logits in float32)."""
    ids, mask = batch["input_ids"], batch["attention_mask"]
    logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
    logp = logits.log_softmax(-1).gather(2, ids[:, 1:, None])[..., 0]
    return (logp * mask[:, 1:]).sum(1)


def tokens(batch: int, seq: int, vocab: int, device: str, seed: int = 1) -> dict:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (batch, seq), generator=g)
    mask = torch.ones(batch, seq, dtype=torch.long)
    mask[1, : seq // 4] = 0  # one left-padded row
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device)}


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a - b).abs() / b.abs().clamp_min(1e-300)).max())


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(device: str, repeats: int, call) -> dict:
    """Median seconds of `repeats` runs after one warm-up, and the peak memory of one run."""
    call()
    sync(device)
    times = []
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        out = call()
        sync(device)
        times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else None
    return {"median_s": statistics.median(times), "times_s": times, "peak_mib": peak,
            "result": out}


def check_exactness(device: str, out: dict) -> None:
    model = llama(SIZES["tiny"], device, torch.bfloat16)
    ref_model = copy.deepcopy(model).to("cpu", torch.float64)
    batch = tokens(4, 24, SIZES["tiny"]["vocab_size"], device)
    ref = sq_grad_norms(ref_model, logprob_sum, {k: v.cpu() for k, v in batch.items()})
    res = {"reference": "loop engine, float64 copy of the bf16 weights, on the CPU"}
    for method in ("ghost", "loop", "auto"):
        got = sq_grad_norms(model, logprob_sum, batch, method=method)
        if got.device.type != "cpu" or got.dtype != torch.float64:
            raise AssertionError(f"{method}: result on {got.device} as {got.dtype}")
        res[f"{method}_rel_err"] = rel(got, ref)
    out["exactness"] = res
    bad = {k: v for k, v in res.items() if k.endswith("rel_err") and not v <= BF16_TOLERANCE}
    if bad:
        raise AssertionError(f"bf16 errors over the tolerance {BF16_TOLERANCE}: {bad}")


def check_speed(device: str, size: str, repeats: int, out: dict) -> torch.nn.Module:
    shape = SIZES[size]
    model = llama(shape, device, torch.bfloat16)
    n_params = sum(p.numel() for p in model.parameters())
    batch = tokens(shape["batch"], shape["seq"], shape["vocab_size"], device)

    def plain():
        model.zero_grad(set_to_none=True)
        logprob_sum(model, batch).sum().backward()
        model.zero_grad(set_to_none=True)

    runs = {"plain": timed(device, repeats, plain)}
    for method in ("ghost", "loop"):
        runs[method] = timed(device, repeats,
                             lambda m=method: sq_grad_norms(model, logprob_sum, batch, method=m))
    base = runs["plain"]["median_s"]
    res = {"model": f"random Llama ({size}), {n_params / 1e9:.3f}e9 parameters, bf16",
           "batch": shape["batch"], "seq": shape["seq"], "repeats": repeats}
    for k, r in runs.items():
        res[k] = {"median_s": r["median_s"], "times_s": r["times_s"], "x_plain":
                  r["median_s"] / base, "peak_mib": r["peak_mib"]}
    ghost, loop = runs["ghost"]["result"], runs["loop"]["result"]
    res["ghost_vs_loop_rel_diff"] = rel(ghost, loop)
    out["speed"] = res
    if not (torch.isfinite(ghost).all() and (ghost > 0).all()):
        raise AssertionError(f"ghost norms not finite and positive: {ghost}")
    if not res["ghost_vs_loop_rel_diff"] <= BF16_TOLERANCE:
        raise AssertionError(f"ghost vs loop differ by {res['ghost_vs_loop_rel_diff']:.3g}")
    return model


def word_tokenizer(vocab: int):
    """A word-level tokenizer built in code: word i of a made-up vocabulary is token id i."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3}
    words.update({f"w{i}": i for i in range(4, min(vocab, 2000))})
    tok = Tokenizer(models.WordLevel(words, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>",
                                   eos_token="</s>", unk_token="<unk>")


def check_score(model: torch.nn.Module, device: str, out: dict) -> None:
    from isograd.lm import score

    vocab = model.config.vocab_size
    tok = word_tokenizer(vocab)
    g = torch.Generator().manual_seed(2)
    n = 8
    prompts = [" ".join(f"w{int(i)}" for i in torch.randint(4, 1000, (20 + 3 * k,), generator=g))
               for k in range(n)]
    answers = [[int(i) for i in torch.randint(4, vocab, (1 + k % 4,), generator=g)]
               for k in range(n)]
    t0 = time.perf_counter()
    s = score(model, tok, prompts, answers, method="auto", batch_size=n)
    sync(device)
    secs = time.perf_counter() - t0
    ref = score(model, tok, prompts[:2], answers[:2], method="loop", batch_size=2)
    res = {"pairs": n, "seconds": secs, "p": s.p.tolist(), "epistemic": s.epistemic.tolist(),
           "loop_rel_diff_first_two": rel(s.epistemic[:2], ref.epistemic)}
    out["score"] = res
    if not (torch.isfinite(s.epistemic).all() and torch.isfinite(s.p).all()):
        raise AssertionError("score returned non-finite values")
    if not res["loop_rel_diff_first_two"] <= BF16_TOLERANCE:
        raise AssertionError(f"score: auto vs loop differ by {res['loop_rel_diff_first_two']:.3g}")


def check_fsdp(model: torch.nn.Module, device: str, size: str, repeats: int, out: dict) -> None:
    """FSDP2 (world size 1, in this process) against the unsharded model, same batch."""
    import socket

    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    shape = SIZES[size]
    batch = tokens(shape["batch"], shape["seq"], shape["vocab_size"], device)
    own_group = not dist.is_initialized()
    if own_group:
        with socket.socket() as sock:
            sock.bind(("localhost", 0))
            port = sock.getsockname()[1]
        os.environ.setdefault("MASTER_ADDR", "localhost")
        os.environ.setdefault("MASTER_PORT", str(port))
        if device.startswith("cuda"):
            torch.cuda.set_device(torch.device(device))
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo",
                                rank=0, world_size=1)
    try:
        plain = timed(device, repeats,
                      lambda: sq_grad_norms(model, logprob_sum, batch, method="ghost"))
        sharded = copy.deepcopy(model)
        mesh = init_device_mesh(device.split(":")[0], (1,))
        for layer in sharded.model.layers:
            fully_shard(layer, mesh=mesh)
        fully_shard(sharded, mesh=mesh)
        fsdp = timed(device, repeats,
                     lambda: sq_grad_norms(sharded, logprob_sum, batch, method="auto"))
        try:
            sq_grad_norms(sharded, logprob_sum, batch, method="loop")
            refused = False
        except ValueError:
            refused = True
        res = {"world_size": 1, "batch": shape["batch"], "seq": shape["seq"],
               "unsharded_ghost": {k: plain[k] for k in ("median_s", "times_s", "peak_mib")},
               "fsdp_auto": {k: fsdp[k] for k in ("median_s", "times_s", "peak_mib")},
               "x_unsharded": fsdp["median_s"] / plain["median_s"],
               "rel_diff": rel(fsdp["result"], plain["result"]), "loop_refused": refused}
        out["fsdp"] = res
        if not res["rel_diff"] <= BF16_TOLERANCE:
            raise AssertionError(f"FSDP2 vs unsharded ghost differ by {res['rel_diff']:.3g}")
        if not refused:
            raise AssertionError("the loop engine was not refused on an FSDP2 model")
    finally:
        if own_group:
            dist.destroy_process_group()


def main() -> int:
    ap = argparse.ArgumentParser(description="GPU check of isograd's norm engines")
    ap.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    ap.add_argument("--size", choices=sorted(SIZES), help="default: 1b on cuda, tiny on cpu")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, help="JSON path (default: $OUT/gpu_check.json, "
                    "else results/bench/gpu/gpu_check.json)")
    args = ap.parse_args()
    size = args.size or ("tiny" if args.device == "cpu" else "1b")
    path = args.out or (Path(os.environ["OUT"]) / "gpu_check.json" if os.environ.get("OUT")
                        else ROOT / "results/bench/gpu/gpu_check.json")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("gpu_check: CUDA is not available (use --device cpu for a dry run)",
              file=sys.stderr)
        return 2
    if args.device == "cpu":
        torch.set_num_threads(min(2, torch.get_num_threads()))
    out: dict = {
        "command": " ".join(["benchmarks/gpu_check.sh", *sys.argv[1:]]),
        "device": args.device, "size": size, "torch": torch.__version__,
        "device_name": torch.cuda.get_device_name(args.device)
        if args.device.startswith("cuda") else platform.processor() or platform.machine(),
        "failures": [],
    }
    started = time.perf_counter()
    model = None
    steps = [("exactness", lambda: check_exactness(args.device, out)),
             ("speed", lambda: check_speed(args.device, size, args.repeats, out)),
             ("score", lambda: check_score(model, args.device, out)),
             ("fsdp", lambda: check_fsdp(model, args.device, size, args.repeats, out))]
    for name, step in steps:
        t0 = time.perf_counter()
        try:
            got = step()
            if name == "speed":
                model = got
        except Exception as e:  # recorded and reported: the script exits non-zero
            out["failures"].append({"step": name, "error": f"{type(e).__name__}: {e}",
                                    "traceback": traceback.format_exc(limit=8)})
            print(f"gpu_check: {name} FAILED: {type(e).__name__}: {e}", file=sys.stderr)
            if name == "speed":
                break  # no model for the score step
        print(f"gpu_check: {name} done in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    out["seconds"] = time.perf_counter() - started
    out["ok"] = not out["failures"]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps({k: out.get(k) for k in ("exactness", "speed", "fsdp", "ok")}, indent=1))
    print(f"gpu_check: wrote {path}; {'OK' if out['ok'] else 'FAILED'}", file=sys.stderr)
    return 0 if out["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
