"""Declarative test problems every norm engine runs through (no downloads: configs in code).

A `Problem` builds a model and a batch in a given dtype and names the per-example scalar
`fn(model, batch) -> [B]`. `brute_force` is the independent reference: the full Jacobian of
the per-example outputs (torch.func.jacrev over `functional_call`), squared and summed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, jacrev

VOCAB = 37


@dataclass(frozen=True)
class Problem:
    id: str
    build_model: Callable[[torch.dtype], nn.Module]
    build_batch: Callable[[torch.dtype], Any]
    fn: Callable[[nn.Module, Any], torch.Tensor]
    rtol: float = 1e-8
    """Agreement expected between engines in float64 (looser only where the model itself
    computes in float32, e.g. Gemma2's RMSNorm casts to float32 whatever the weights)."""


def _seeded(builder):
    def build(dtype: torch.dtype) -> nn.Module:
        torch.manual_seed(0)
        return builder().to(dtype)

    return build


def _x(shape, seed=1):
    def build(dtype):
        g = torch.Generator().manual_seed(seed)
        return torch.randn(*shape, generator=g).to(dtype)

    return build


def log_softmax_top(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """log p of the predicted class, [B]."""
    logits = model(x)
    return logits.log_softmax(1).max(1).values


def prob_top(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """p of the predicted class itself, [B]."""
    return model(x).softmax(1).max(1).values


def regression_mean(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model(x)[:, 0]


def binary_logsigmoid(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return nn.functional.logsigmoid(model(x)[:, 0])


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)
        self.conv2 = nn.Conv2d(3, 4, 3, stride=2)
        self.head = nn.Linear(4 * 3 * 3, 5)
        with torch.no_grad():  # non-trivial running statistics: eval-mode BN is affine
            self.bn.running_mean.uniform_(-0.5, 0.5)
            self.bn.running_var.uniform_(0.5, 2.0)
            self.bn.weight.uniform_(0.5, 1.5)
            self.bn.bias.uniform_(-0.5, 0.5)
        self.drop = nn.Dropout(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn(self.conv1(x)))
        h = self.drop(torch.relu(self.conv2(h)))
        return self.head(h.flatten(1))


def tiny_gpt2() -> nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(
        vocab_size=VOCAB, n_positions=16, n_embd=8, n_layer=2, n_head=2,
        resid_pdrop=0.1, embd_pdrop=0.1, attn_pdrop=0.1, tie_word_embeddings=True,
        bos_token_id=1, eos_token_id=2,
    )
    model = GPT2LMHeadModel(cfg)
    assert model.lm_head.weight is model.transformer.wte.weight
    return model


def tiny_llama() -> nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=VOCAB, hidden_size=8, intermediate_size=16, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=32,
        tie_word_embeddings=False, attention_dropout=0.1, bos_token_id=1, eos_token_id=2,
    )
    return _perturb_norms(LlamaForCausalLM(cfg))


def _perturb_norms(model: nn.Module) -> nn.Module:
    """RMSNorm weights start at 1 (Gemma's at 0): perturb so their gradients are generic."""
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "norm" in n:
                p.add_(0.1 * torch.randn_like(p))
    return model


_TINY = dict(vocab_size=VOCAB, hidden_size=8, intermediate_size=16, num_hidden_layers=2,
             num_attention_heads=2, max_position_embeddings=32, bos_token_id=1, eos_token_id=2)


def tiny_opt() -> nn.Module:
    """OPT: fc1/fc2 and the final layer norm see flattened [B·T, d] rows; tied head."""
    from transformers import OPTConfig, OPTForCausalLM

    cfg = OPTConfig(vocab_size=VOCAB, hidden_size=8, ffn_dim=16, num_hidden_layers=2,
                    num_attention_heads=2, max_position_embeddings=32, word_embed_proj_dim=8,
                    pad_token_id=0, bos_token_id=1, eos_token_id=2, dropout=0.1)
    return OPTForCausalLM(cfg)


def tiny_neox() -> nn.Module:
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    cfg = GPTNeoXConfig(**_TINY, rotary_pct=0.5, use_parallel_residual=True,
                        tie_word_embeddings=False)
    return GPTNeoXForCausalLM(cfg)


def tiny_qwen2() -> nn.Module:
    """Qwen2: biased q/k/v, RMSNorm, tied embeddings."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    model = Qwen2ForCausalLM(Qwen2Config(**_TINY, num_key_value_heads=1, tie_word_embeddings=True))
    assert model.lm_head.weight is model.model.embed_tokens.weight
    return _perturb_norms(model)


def tiny_gemma2() -> nn.Module:
    """Gemma2: (1 + w) RMSNorms around each block, soft-capped logits, scaled embedding, tied."""
    from transformers import Gemma2Config, Gemma2ForCausalLM

    cfg = Gemma2Config(**_TINY, num_key_value_heads=1, head_dim=4, query_pre_attn_scalar=4,
                       sliding_window=4, final_logit_softcapping=5.0, pad_token_id=0)
    return _perturb_norms(Gemma2ForCausalLM(cfg))


def tiny_mistral() -> nn.Module:
    from transformers import MistralConfig, MistralForCausalLM

    return _perturb_norms(MistralForCausalLM(MistralConfig(**_TINY, num_key_value_heads=1,
                                                           sliding_window=4)))


def tiny_phi() -> nn.Module:
    """Phi: parallel attention + MLP on one LayerNorm, partial rotary, biased head."""
    from transformers import PhiConfig, PhiForCausalLM

    return PhiForCausalLM(PhiConfig(**_TINY, partial_rotary_factor=0.5))


SEQS = [[3, 5, 7, 11, 2, 9], [4, 4, 8], [1, 30, 12, 12, 6]]


def padded_batch(side: str = "right", seqs: list[list[int]] = SEQS):
    """input_ids / attention_mask for `seqs`, padded on `side` with token 0."""
    width = max(map(len, seqs))
    ids, mask = [], []
    for s in seqs:
        pad = [0] * (width - len(s))
        ids.append(s + pad if side == "right" else pad + s)
        mask.append([1] * len(s) + [0] * len(pad) if side == "right" else [0] * len(pad) + [1] * len(s))
    return {"input_ids": torch.tensor(ids), "attention_mask": torch.tensor(mask)}


def lm_logprob(model: nn.Module, batch: dict) -> torch.Tensor:
    """Sum of next-token log-probs over each example's real tokens, [B] (padding-aware)."""
    ids, mask = batch["input_ids"], batch["attention_mask"]
    pos = (mask.cumsum(1) - 1).clamp(min=0)
    logits = model(input_ids=ids, attention_mask=mask, position_ids=pos).logits
    logp = logits[:, :-1].log_softmax(-1).gather(2, ids[:, 1:, None])[..., 0]
    keep = (mask[:, 1:] * mask[:, :-1]).to(logp.dtype)
    return (logp * keep).sum(1)


def lm_logprob_plain(model: nn.Module, batch: dict) -> torch.Tensor:
    """As `lm_logprob`, calling the model as most users do: no position_ids (GPT-2's position
    embedding then returns [1, T, d], broadcast over the batch)."""
    ids, mask = batch["input_ids"], batch["attention_mask"]
    logits = model(input_ids=ids, attention_mask=mask).logits
    logp = logits[:, :-1].log_softmax(-1).gather(2, ids[:, 1:, None])[..., 0]
    keep = (mask[:, 1:] * mask[:, :-1]).to(logp.dtype)
    return (logp * keep).sum(1)


def lm_prefix_logprob(model: nn.Module, batch: dict) -> torch.Tensor:
    """Log-prob of the 2nd and 3rd tokens only, [B]: later positions carry no gradient at all
    (with a tied matrix, the embedding's zero rows are dropped after the head's cross term was
    prepared: the case of a multiple-choice row whose last option tokens predict nothing)."""
    ids, mask = batch["input_ids"], batch["attention_mask"]
    pos = (mask.cumsum(1) - 1).clamp(min=0)
    logits = model(input_ids=ids, attention_mask=mask, position_ids=pos).logits
    return logits[:, :2].log_softmax(-1).gather(2, ids[:, 1:3, None])[..., 0].sum(1)


def _long_batch(dtype):
    return padded_batch("right", [[3, 5, 7, 11, 2, 9, 4, 4, 8, 12, 6, 1], [4, 4, 8, 2, 9, 30, 7]])


def _lm_batch(side):
    return lambda dtype: padded_batch(side)


PROBLEMS: list[Problem] = [
    Problem("mlp-classification", _seeded(lambda: nn.Sequential(
        nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3))), _x((5, 4)), log_softmax_top),
    Problem("mlp-classification-prob", _seeded(lambda: nn.Sequential(
        nn.Linear(4, 6), nn.GELU(), nn.Linear(6, 3))), _x((5, 4)), prob_top),
    Problem("mlp-binary", _seeded(lambda: nn.Sequential(
        nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 1))), _x((6, 3)), binary_logsigmoid),
    Problem("mlp-regression", _seeded(lambda: nn.Sequential(
        nn.Linear(2, 7), nn.LayerNorm(7), nn.Tanh(), nn.Dropout(0.3), nn.Linear(7, 2))),
        _x((4, 2)), regression_mean),
    Problem("cnn", _seeded(SmallCNN), _x((3, 1, 7, 7)), log_softmax_top),
    Problem("gpt2-tied-right-pad", _seeded(tiny_gpt2), _lm_batch("right"), lm_logprob),
    Problem("gpt2-tied-left-pad", _seeded(tiny_gpt2), _lm_batch("left"), lm_logprob),
    Problem("gpt2-tied-prefix-only", _seeded(tiny_gpt2), _long_batch, lm_prefix_logprob),
    Problem("llama-right-pad", _seeded(tiny_llama), _lm_batch("right"), lm_logprob),
    Problem("llama-left-pad", _seeded(tiny_llama), _lm_batch("left"), lm_logprob),
    Problem("gpt2-no-position-ids", _seeded(tiny_gpt2), _lm_batch("right"), lm_logprob_plain),
    Problem("llama-no-position-ids", _seeded(tiny_llama), _lm_batch("right"), lm_logprob_plain),
    Problem("opt-no-position-ids", _seeded(tiny_opt), _lm_batch("right"), lm_logprob_plain),
    Problem("gpt-neox-left-pad", _seeded(tiny_neox), _lm_batch("left"), lm_logprob),
    Problem("qwen2-tied-right-pad", _seeded(tiny_qwen2), _lm_batch("right"), lm_logprob),
    Problem("gemma2-tied-right-pad", _seeded(tiny_gemma2), _lm_batch("right"), lm_logprob,
            rtol=1e-6),
    Problem("mistral-no-position-ids", _seeded(tiny_mistral), _lm_batch("right"),
            lm_logprob_plain),
    Problem("phi-right-pad", _seeded(tiny_phi), _lm_batch("right"), lm_logprob),
]


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest elementwise relative error of `a` against the reference `b`."""
    return float(((a - b).abs() / b.abs().clamp_min(1e-300)).max())


HALF = {"bf16": torch.bfloat16, "fp16": torch.float16}
HALF_ARCHS = {"llama": tiny_llama, "gpt2": tiny_gpt2, "qwen2": tiny_qwen2}


def half_vs_fp64(arch: str, dtype: str, method: str, side: str = "right") -> float:
    """Largest relative error over a padded batch of a half-precision model's norms against the
    loop engine on a float64 copy of the same (rounded) weights."""
    import copy

    from isograd import sq_grad_norms

    torch.manual_seed(0)
    model = HALF_ARCHS[arch]().to(HALF[dtype])
    ref_model = copy.deepcopy(model).double()
    batch = padded_batch(side)
    ref = sq_grad_norms(ref_model, lm_logprob, batch, method="loop")
    got = sq_grad_norms(model, lm_logprob, batch, method=method)
    assert got.dtype == torch.float64 and torch.isfinite(got).all(), got
    return rel_err(got, ref)


def refused_then_loop(model: nn.Module, fn, batch, refusal: str, reason: str,
                      **options) -> torch.Tensor:
    """Assert ghost refuses (GhostUnsupported matching `refusal`) and auto then gives the loop
    engine's exact result with an EngineFallbackWarning matching `reason`; return it."""
    import pytest

    from isograd import sq_grad_norms
    from isograd.norms import EngineFallbackWarning, GhostUnsupported

    with pytest.raises(GhostUnsupported, match=refusal):
        sq_grad_norms(model, fn, batch, method="ghost", **options)
    ref = sq_grad_norms(model, fn, batch, method="loop", **options)
    with pytest.warns(EngineFallbackWarning, match=reason):
        got = sq_grad_norms(model, fn, batch, method="auto", **options)
    torch.testing.assert_close(got, ref, rtol=0, atol=0)
    return got


def brute_force(model: nn.Module, fn, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Squared norms from the full per-example Jacobian (float64 expected): total and per param."""
    was = model.training
    model.eval()
    try:
        params = {n: p.detach() for n, p in model.named_parameters()}

        def f(ps):
            return fn(lambda *a, **k: functional_call(model, ps, a, k), batch)

        jac = jacrev(f)(params)
    finally:
        model.train(was)
    per = {n: j.reshape(j.shape[0], -1).double().square().sum(1) for n, j in jac.items()}
    return sum(per.values()), per

