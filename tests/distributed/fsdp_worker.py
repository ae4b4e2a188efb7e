"""Run by torchrun (2 ranks, gloo) from test_fsdp.py: FSDP2-sharded models against unsharded.

Each rank scores its own examples with the sharded model and with an unsharded copy of the same
weights, and writes what it saw to ``<out>/rank<r>.json``; the test asserts on those files.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.fsdp import fully_shard

from isograd import sq_grad_norms
from isograd.lm import score
from tests.lm.tiny_lm import tiny_model, tiny_tokenizer, vocab_size


def tiny_llama_tied() -> nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(1)
    cfg = LlamaConfig(vocab_size=vocab_size(), hidden_size=16, intermediate_size=32,
                      num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                      max_position_embeddings=64, tie_word_embeddings=True,
                      bos_token_id=1, eos_token_id=2, pad_token_id=0)
    model = LlamaForCausalLM(cfg)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "norm" in n:
                p.add_(0.1 * torch.randn_like(p))
    assert model.lm_head.weight is model.model.embed_tokens.weight
    return model.double().eval()


BUILDERS = {
    "llama": lambda: tiny_model("llama"),
    "llama-tied": tiny_llama_tied,
    "gpt2-tied": lambda: tiny_model("gpt2"),
}


def blocks(model: nn.Module) -> nn.ModuleList:
    return model.model.layers if hasattr(model, "model") else model.transformer.h


def shard(model: nn.Module) -> nn.Module:
    for b in blocks(model):
        fully_shard(b)
    fully_shard(model)
    return model


def batch_for(rank: int) -> dict[str, torch.Tensor]:
    """Rank-specific right-padded token batch with its mask and position ids."""
    g = torch.Generator().manual_seed(100 + rank)
    ids = torch.randint(3, vocab_size(), (3, 9), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    mask[2, 4 + rank:] = 0
    ids = ids.masked_fill(mask == 0, 0)
    return {"input_ids": ids, "attention_mask": mask, "position_ids": (mask.cumsum(1) - 1).clamp(min=0)}


def last_logp(model: nn.Module, b: dict[str, torch.Tensor]) -> torch.Tensor:
    """log p of each row's last real token given the rest, [B]."""
    out = model(**b).logits.log_softmax(-1)
    last = b["attention_mask"].sum(1) - 1
    rows = torch.arange(len(last))
    return out[rows, last - 1].gather(1, b["input_ids"][rows, last].unsqueeze(1)).squeeze(1)


def head_outside(model: nn.Module, b: dict[str, torch.Tensor]) -> torch.Tensor:
    """Uses lm_head.weight outside lm_head's forward: the ghost engine must refuse it."""
    h = model(**b, output_hidden_states=True).hidden_states[-1][:, -1]
    return (h @ model.lm_head.weight.T).log_softmax(-1)[:, 3]


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a - b).abs() / b.abs().clamp_min(1e-300)).max())


def main(out: Path) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    res: dict = {"rank": rank, "world": dist.get_world_size(), "norms": {}, "score": {}}
    batch = batch_for(rank)
    tok = tiny_tokenizer()
    prompts = [f"Q{rank}: what is {i}+{rank}?" for i in range(3)]
    answers = [" four", f" {rank}", " no idea"]
    for kind, build in BUILDERS.items():
        ref = build()
        want, want_per = sq_grad_norms(ref, last_logp, batch, method="loop", by_param=True)
        want_s = score(ref, tok, prompts, answers, method="loop", batch_size=2)
        model = shard(build())
        sharded = all(type(p).__name__ == "DTensor" for p in model.parameters())
        entry = {"sharded": sharded, "n": len(want)}
        for method in ("ghost", "auto"):
            got, per = sq_grad_norms(model, last_logp, batch, method=method, by_param=True)
            entry[method] = rel(got, want)
            entry[f"{method}_by_param"] = max(rel(per[n], want_per[n]) for n in want_per
                                              if float(want_per[n].abs().min()) > 0)
        entry["grads_none"] = all(p.grad is None for p in model.parameters())
        entry["still_sharded"] = all(type(p).__name__ == "DTensor" for p in model.parameters())
        try:
            sq_grad_norms(model, last_logp, batch, method="loop")
            entry["loop_error"] = None
        except ValueError as e:
            entry["loop_error"] = str(e)
        res["norms"][kind] = entry
        s = score(model, tok, prompts, answers, method="auto", batch_size=2)
        res["score"][kind] = {k: rel(getattr(s, k), getattr(want_s, k)) for k in
                              ("p", "epistemic", "epistemic_layer_scaled", "embedding_grad")
                              if getattr(want_s, k) is not None}
    model = shard(BUILDERS["llama"]())
    try:
        sq_grad_norms(model, head_outside, batch, method="ghost")
        res["outside_error"] = None
    except ValueError as e:
        res["outside_error"] = str(e)
    (out / f"rank{rank}.json").write_text(json.dumps(res))
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
