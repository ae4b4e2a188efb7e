"""Every causal LM of the installed transformers, built tiny, against the norm engines.

`build(model_type)` makes a tiny float64 model from the architecture's own config class (its
defaults, with the sizes shrunk); `check(model_type)` compares ghost and auto with the loop
engine on a left-padded batch (and a right-padded one with B == T) using a plain ``fn``
without ``position_ids``. `python -m tests.architectures.archs` runs the whole registry and
writes the table `docs/architectures.md`.
"""

from __future__ import annotations

import sys
import time
import traceback
import warnings
from dataclasses import dataclass

import torch
from torch import nn

from isograd import sq_grad_norms
from isograd.norms import EngineFallbackWarning, GhostUnsupported

VOCAB = 48
RTOL = 1e-8
# architectures whose own forward computes in float32 inside, even for a float64 model (casts
# in their norms, attention or logits): the engines then agree only to float32 accuracy
FLOAT32_INSIDE: dict[str, str] = {}
FLOAT32_RTOL = 1e-4
MAX_PARAMS = 30_000_000

# the sizes every tiny config gets, under each name a config may use for them
_SIZES = dict(
    vocab_size=VOCAB, hidden_size=16, n_embd=16, d_model=16, dim=16, embed_dim=16,
    num_hidden_layers=2, n_layer=2, num_layers=2, n_layers=2, decoder_layers=2, encoder_layers=2,
    num_attention_heads=2, n_head=2, n_heads=2, num_heads=2, decoder_attention_heads=2,
    encoder_attention_heads=2, num_key_value_heads=1, num_kv_heads=1, n_kv_heads=1,
    intermediate_size=32, ffn_dim=32, n_inner=32, d_ff=32, decoder_ffn_dim=32,
    encoder_ffn_dim=32, moe_intermediate_size=16, shared_expert_intermediate_size=16,
    head_dim=8, kv_lora_rank=8, q_lora_rank=8, qk_rope_head_dim=4, qk_nope_head_dim=4,
    v_head_dim=8, max_position_embeddings=64, n_positions=64, n_ctx=64, max_seq_len=64,
    num_experts=4, n_routed_experts=4, num_local_experts=4, num_experts_per_tok=2,
    first_k_dense_replace=1, sliding_window=4,
    pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1,
)


@dataclass(frozen=True)
class Outcome:
    """One architecture's result: `kind` is exact, fallback, cannot-build, non-finite (the
    model's own gradients are NaN on the tiny config, in the loop engine too), wrong or crash."""

    model_type: str
    kind: str
    detail: str = ""
    ghost_err: float | None = None
    seconds: float = 0.0


_KEEP_DIMS = {"head_dim", "kv_lora_rank", "q_lora_rank", "qk_rope_head_dim", "qk_nope_head_dim",
              "v_head_dim", "sliding_window", "first_k_dense_replace", "moe_intermediate_size",
              "shared_expert_intermediate_size"}
_LAYERS_ONLY = {"vocab_size", "num_hidden_layers", "n_layer", "num_layers", "n_layers",
                "decoder_layers", "encoder_layers", "num_experts", "n_routed_experts",
                "num_local_experts", "pad_token_id", "bos_token_id", "eos_token_id",
                "decoder_start_token_id"}
# hand-written configs for architectures whose layout the generic sizes do not fit (tried first)
_MLA = dict(head_dim=4, num_key_value_heads=2)  # multi-head latent attention: rope dims = head
_MLA_GROUPED = dict(_MLA, n_group=1, topk_group=1)  # ... with grouped expert routing
OVERRIDES: dict[str, dict] = {
    **{m: _MLA for m in ("deepseek_v2", "axk2", "glm4_moe_lite", "glm_moe_dsa", "sarvam_mla",
                         "youtu", "minicpm3", "hy_v4", "longcat_flash")},
    **{m: _MLA_GROUPED for m in ("deepseek_v3", "deepseek_v32", "axk1")},
    "codegen": dict(rotary_dim=4), "gptj": dict(rotary_dim=4),
    "diffllama": dict(num_key_value_heads=2),  # differential attention splits KV heads in two
    "gpt_neo": dict(attention_types=[[["global", "local"], 1]]),
    "prophetnet": dict(num_hidden_layers=None, num_encoder_layers=1, num_decoder_layers=2),
    "mamba2": dict(num_heads=4, n_groups=1),  # SSM heads * head dim = 2 * hidden
    "bamba": dict(mamba_n_heads=4, mamba_d_head=8, mamba_n_groups=1),
    "granitemoehybrid": dict(mamba_n_heads=4, mamba_d_head=8, mamba_n_groups=1),
    "zaya": dict(num_experts_per_tok=1),
    "dots3_note_text": dict(num_key_value_heads=2),
    "qwen3_5": dict(layer_types=["linear_attention", "full_attention"]),
    "qwen3_5_moe": dict(layer_types=["linear_attention", "full_attention"]),
    "dots1": dict(n_shared_experts=1),
    "lfm2_moe": dict(layer_types=["conv", "full_attention"]),
    "zamba2": dict(layers_block_type=["linear_attention", "hybrid"]),
    # its shared transformer block is tied across hybrid layers: two of them, so 3 layers
    "zamba": dict(num_hidden_layers=3, layers_block_type=["linear_attention", "hybrid", "hybrid"],
                  attn_layer_period=1, attn_layer_offset=1),
}
# the architecture's own reason, for those that no config here builds (checked by the sweep:
# listed beside the last tier's error)
OWN_REASONS: dict[str, str] = {
    "blt": "its byte patcher, global and local encoder/decoder sub-configs keep sizes of their "
           "own (a hash-embedding vocabulary of 500,002): over 30M parameters with every "
           "shared size tiny; hand-written shrinks failed on their cross-attention widths",
    "cohere_compass_text": "its default config has no RoPE parameters for its own "
                           "'full_attention' layers (the model's rotary init fails)",
    "dbrx": "its default attention sub-config has no rope_theta (the model's rotary init fails)",
    "dots3_note": "a per-layer (heterogeneous) config: sizes vary by layer and cannot be set "
                  "globally; its own defaults exceed 30M parameters",
    "gemma3n": "its vision tower needs the timm package (not installed)",
    "gemma3n_text": "shares KV caches across layers by a layer pattern that 2 layers cannot "
                    "hold (its cache-sharing layer types mismatch)",
    "gemma4": "a per-layer (heterogeneous) config: head_dim varies by layer; its own defaults "
              "exceed 30M parameters",
    "gemma4_text": "a per-layer (heterogeneous) config: head_dim varies by layer; its own "
                   "defaults exceed 30M parameters",
    "gemma4_assistant": "its default config fails its own validation (validate_architecture: "
                        "hidden_size_per_layer_input must be 0, its default sub-config sets "
                        "256)",
    "gemma4_unified_assistant": "a per-layer (heterogeneous) config whose KV-sharing layer "
                                "pattern 2 layers cannot hold",
    "inkling2_text": "computes in float32 inside (a float32 x float64 matmul): no float64 run",
    "inkling2_loop_text": "computes in float32 inside (a float32 x float64 matmul): no float64 "
                          "run",
    "musicgen": "a composite text-encoder / audio-encoder / decoder config whose default has no "
                "decoder sub-config ('dropout' missing)",
    "musicgen_melody": "a composite text-encoder / audio-encoder / decoder config whose default "
                       "has no decoder sub-config ('dropout' missing)",
    "qwen4_exp": "its default config leaves the sparse-attention indexer's token_budget and "
                 "compress_ratio unset (None)",
    "reformer": "its reversible layers refuse a backward outside train mode (and its axial "
                "position factors must sum to the hidden size)",
    "xglm": "its float64 forward overflows a float conversion inside (sinusoidal positions)",
}
TIERS = (
    ("tiny", {}),
    ("tiny, the config's own head and rope dims", {k: None for k in _KEEP_DIMS}),
    ("the config's own sizes, 2 layers", {k: None for k in _SIZES if k not in _LAYERS_ONLY}),
)
"""Configs tried in turn: a failure is reported with the last one's error (the architecture's
own defaults), not with a size this file chose."""


def _shrink(cfg, sizes: dict) -> None:
    """Set `sizes` on `cfg` and its sub-configs (where the attribute exists and can be set:
    some are derived properties)."""
    for key, value in sizes.items():
        if value is None or not hasattr(cfg, key):
            continue
        try:
            setattr(cfg, key, value)
        except (AttributeError, TypeError, ValueError):
            pass
    layers = getattr(cfg, "num_hidden_layers", None)
    types = getattr(cfg, "layer_types", None)
    if isinstance(types, (list, tuple)) and isinstance(layers, int):
        try:
            cfg.layer_types = list(types)[:layers]
        except (AttributeError, TypeError, ValueError):
            pass
    from transformers import PretrainedConfig

    for name, inner in list(vars(cfg).items()):  # every sub-config (text, encoder, patcher...)
        if isinstance(inner, PretrainedConfig) and name != "parent":
            _shrink(inner, sizes)


def build(model_type: str) -> nn.Module:
    """The tiny float64 causal LM of `model_type` in eval mode, from the first of `TIERS` that
    builds and runs (raises the last tier's error when none does)."""
    errors = []
    tiers = TIERS
    if model_type in OVERRIDES:
        tiers = (("tiny, hand-written", OVERRIDES[model_type]), *TIERS)
    for tier, drop in tiers:
        # a tier's entries replace the tiny sizes; None drops one (the config's own default)
        sizes = {k: v for k, v in {**_SIZES, **drop}.items() if v is not None}
        try:
            return _build(model_type, sizes)
        except Exception as e:  # noqa: BLE001 - the next tier, then every tier's reason
            first = str(e).splitlines()[0][:150] if str(e) else ""
            errors.append(f"{tier}: {type(e).__name__}: {first}")
    own = OWN_REASONS.get(model_type, "no reason of its own recorded")
    raise RuntimeError(f"{own}. Last error: {errors[-1]}")


def _build(model_type: str, sizes: dict) -> nn.Module:
    from transformers import AutoModelForCausalLM
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    cls = CONFIG_MAPPING[model_type]
    known = cls().to_dict()
    # sizes passed to the constructor, so that values derived from them there follow
    cfg = cls(**{k: v for k, v in sizes.items() if k in known})
    _shrink(cfg, sizes)
    if hasattr(cfg, "is_decoder"):
        cfg.is_decoder = True
    cfg._experts_implementation = "eager"  # grouped_mm kernels take no float64
    if hasattr(cfg, "use_cache"):
        cfg.use_cache = False  # a scoring forward: no state updated in place (RWKV)
    with torch.device("meta"):  # count first: a size the shrinking missed stays huge
        n = sum(p.numel() for p in AutoModelForCausalLM.from_config(cfg).parameters())
    if n > MAX_PARAMS:
        raise ValueError(f"{n:,} parameters (limit {MAX_PARAMS:,})")
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float64)
    model = model.double().eval()
    if hasattr(model, "set_default_language"):  # X-MOD: one adapter per language, chosen first
        model.set_default_language("en_XX")
    with torch.no_grad():  # norm weights start at 1 or 0: perturb so gradients are generic
        for n, p in model.named_parameters():
            if "norm" in n.lower() or p.dim() == 1:
                p.add_(0.05 * torch.randn_like(p))
    try:  # a config whose own forward or backward (eval mode) cannot run is not built
        plain_logprob(model, batch("right", 2, 5)).sum().backward()
    except Exception as e:  # noqa: BLE001 - re-raised with where it failed
        raise RuntimeError(f"its forward/backward in eval mode fails: {type(e).__name__}: "
                           f"{str(e).splitlines()[0] if str(e) else ''}") from e
    model.zero_grad(set_to_none=True)
    return model


def batch(side: str, b: int, t: int) -> dict[str, torch.Tensor]:
    """A padded batch of `b` sequences of lengths from t down to 2, padded on `side`."""
    g = torch.Generator().manual_seed(b * 100 + t)
    ids = torch.randint(3, VOCAB, (b, t), generator=g)
    mask = torch.zeros(b, t, dtype=torch.long)
    for i in range(b):
        n = max(2, t - i)
        if side == "left":
            mask[i, t - n:] = 1
        else:
            mask[i, :n] = 1
    return {"input_ids": ids * mask, "attention_mask": mask}


def plain_logprob(model: nn.Module, data: dict) -> torch.Tensor:
    """Sum of next-token log-probs over the real tokens, calling the model as users do (no
    position_ids)."""
    ids, mask = data["input_ids"], data["attention_mask"]
    logits = model(input_ids=ids, attention_mask=mask).logits
    logp = logits[:, :-1].log_softmax(-1).gather(2, ids[:, 1:, None])[..., 0]
    keep = (mask[:, 1:] * mask[:, :-1]).bool()
    return torch.where(keep, logp, torch.zeros_like(logp)).sum(1)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a - b).abs() / b.abs().clamp_min(1e-300)).max())


def compare(model: nn.Module, data: dict, rtol: float) -> tuple[str, float | None, str]:
    """(exact | fallback | wrong, ghost's error or None, detail) on one batch."""
    ref = sq_grad_norms(model, plain_logprob, data, method="loop")
    if not torch.isfinite(ref).all():
        raise FloatingPointError(f"loop engine gave non-finite norms {ref.tolist()}")
    err, detail = None, ""
    try:
        got = sq_grad_norms(model, plain_logprob, data, method="ghost")
        err = _rel(got, ref)
    except GhostUnsupported as e:
        detail = str(e).splitlines()[0][:160]
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        auto = sq_grad_norms(model, plain_logprob, data, method="auto")
    fell_back = any(issubclass(w.category, EngineFallbackWarning) for w in seen)
    auto_ok = torch.equal(auto, ref) if fell_back else _rel(auto, ref) <= rtol
    if (err is not None and err > rtol) or not auto_ok:
        return "wrong", err, f"ghost rel err {err}, auto ok {auto_ok}"
    return ("exact" if err is not None else "fallback"), err, detail


def check(model_type: str, right_b_eq_t: bool = False) -> Outcome:
    """Build `model_type` tiny and compare the engines (left padding; optionally right padding
    with B == T as well)."""
    start = time.perf_counter()
    try:
        model = build(model_type)
    except Exception as e:  # noqa: BLE001 - the reason is the result
        return Outcome(model_type, "cannot-build", str(e).replace("\n", " ")[:600])
    rtol = FLOAT32_RTOL if model_type in FLOAT32_INSIDE else RTOL
    note = ""
    try:
        try:
            kind, err, detail = compare(model, batch("left", 2, 5), rtol)
        except FloatingPointError as e:
            # the model's own forward is NaN on a fully padded row (float64 masks that
            # overflow): the engines are then compared on right padding
            note = f"left padding: {e}; compared on right padding. "
            try:
                kind, err, detail = compare(model, batch("right", 2, 5), rtol)
            except FloatingPointError as e2:  # plain autograd itself gives NaN: the model's
                return Outcome(model_type, "non-finite", note + str(e2), None,
                               time.perf_counter() - start)
        if right_b_eq_t and kind != "wrong":
            kind2, err2, detail2 = compare(model, batch("right", 4, 4), rtol)
            if kind2 == "wrong" or (kind2 == "fallback" and kind == "exact"):
                kind, err, detail = kind2, err2, "right padding, B == T: " + detail2
    except Exception as e:  # noqa: BLE001
        tb = traceback.format_exception_only(type(e), e)[-1].strip()
        return Outcome(model_type, "crash", note + tb[:200], None, time.perf_counter() - start)
    detail = note + detail
    return Outcome(model_type, kind, detail, err, time.perf_counter() - start)


def all_model_types() -> list[str]:
    """Every architecture of the installed transformers' causal-LM registry."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    return sorted(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)


def main(out: str = "docs/architectures.md") -> None:
    torch.set_num_threads(1)
    import transformers

    rows = []
    for i, mt in enumerate(all_model_types()):
        res = check(mt, right_b_eq_t=i % 4 == 0)
        print(f"{mt}: {res.kind} {res.ghost_err} {res.seconds:.1f}s {res.detail[:100]}",
              flush=True)
        rows.append(res)
    counts = {k: sum(r.kind == k for r in rows) for k in
              ("exact", "fallback", "cannot-build", "non-finite", "wrong", "crash")}
    lines = [
        "# Every causal LM of transformers against the norm engines",
        "",
        f"transformers {transformers.__version__}, torch {torch.__version__}: the "
        f"{len(rows)} architectures of `MODEL_FOR_CAUSAL_LM_MAPPING_NAMES`, each built tiny "
        "in float64 from its own config class (`tests/architectures/archs.py`), on a "
        "left-padded batch (B = 2, T = 5; every fourth one also right-padded with B = T = 4), "
        "called without `position_ids`. **exact**: ghost within 1e-8 relative of the loop "
        "engine and auto equal to it; **fallback**: ghost refuses (`GhostUnsupported`) and auto "
        "returns the loop engine's result with a warning; **cannot-build**: no config builds "
        "and runs (tried in turn: a hand-written tiny config where the generic sizes do not fit "
        "the layout (`OVERRIDES`); all sizes tiny; tiny with the config's own head and rope "
        "dims; the config's own sizes with 2 layers, up to 30M parameters), listed with the "
        "architecture's own reason (`OWN_REASONS`) and the last config's error; "
        "**non-finite**: the model's own gradients are NaN on both paddings "
        "(the loop engine, plain autograd, too). Regenerate with "
        "`python -m tests.architectures.archs` (1 thread).",
        "",
        "| result | count |", "|---|---|",
        *[f"| {k} | {v} |" for k, v in counts.items()],
        "",
        "| architecture | result | ghost rel. error | reason / detail |", "|---|---|---|---|",
    ]
    for r in rows:
        err = "" if r.ghost_err is None else f"{r.ghost_err:.1e}"
        detail = r.detail.replace("|", "/")
        lines.append(f"| {r.model_type} | {r.kind} | {err} | {detail} |")
    with open(out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(counts)


if __name__ == "__main__":
    main(*sys.argv[1:])
