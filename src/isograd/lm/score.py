"""Gradient-norm uncertainty of (prompt, answer) pairs of a causal LM: `score`.

For each pair the prediction p is a probability of the answer given the prompt (see
`Prediction`); epistemic = σ²·‖∇θ p‖², aleatoric = p(1−p), total = their sum (arXiv 2603.29466).
p is computed through log p and the norm as ‖∇p‖² = p²·‖∇ log p‖², which stays finite when
p underflows (a long answer's product of token probabilities).

Padding never changes a number: batches are padded (right by default, or left), with the
attention mask and position ids set so every row sees exactly what it would see alone.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import torch
from torch import nn

from .._choice import Choice
from ..layer_scale import Covariance, LayerScale, layer_scaled_sq_norms
from ..norms.api import Method, sq_grad_norms
from .batching import (
    Answer,
    check_context,
    encode_pairs,
    forward_inputs,
    input_device,
    logits_at,
    pad_id,
    pair_batch,
)
from .signals import (
    LAST_LAYERS,
    capture_embedding_grad,
    group_norms,
    last_blocks,
    layer_group,
    model_layer_variances,
)
from .trace import TokenTrace, prefix_pairs, token_traces

__all__ = ["LMScores", "Prediction", "layer_group", "score", "token_trace"]


class Prediction(Choice):
    """Which probability of a multi-token answer is the prediction p."""

    SEQUENCE = "sequence"
    """Product of the answer tokens' probabilities: the probability of the whole answer."""
    GEOMETRIC = "geometric"
    """Length-normalised: exp(mean token log-probability), the geometric mean (default)."""
    FIRST_TOKEN = "first_token"
    """Probability of the answer's first token only."""


@dataclass(frozen=True)
class LMScores:
    """Per-pair scores; tensors are float64 [B] unless noted.

    Everything comes from one forward and one backward per batch (the per-token `trace`, when
    asked for, from one more batched pass over the answers' prefixes).

    Attributes:
        p: the prediction (see `Prediction`).
        epistemic: the epistemic term under the chosen `covariance`: `epistemic_isotropic`
            (default) or `epistemic_layer_scaled`.
        aleatoric: p(1−p).
        total: epistemic + aleatoric.
        log_p: log p (finite even where p underflows to 0).
        grad_log_p: ‖∇θ log p‖², the norm actually back-propagated (no p² factor, no σ²);
            also readable as `sq_grad_norm_log_p`.
        epistemic_isotropic: σ²·‖∇θ p‖², the paper's term (Σ = σ²I).
        epistemic_layer_scaled: σ²·Σ_l s_l‖∇_l p‖², Σ = σ²·blockdiag(s_l I) with the data-free
            s_l of `isograd.layer_scale.layer_variances` (rule `layer_scale`, weighted mean 1).
        epistemic_last_layers: σ²·‖∇p‖² over the parameters of the model's last `last_layers`
            transformer blocks only; None when no block is recognised in the parameter names.
        embedding_grad: ‖∂ log p / ∂e‖², e = the output of the input-embedding module
            ([B, L, H] per batch; summed over positions and features). Of log p, like
            `grad_log_p`, so it has no p² factor (multiply by p² for the p version). None
            when the backward does not reach the embedding (its weight not selected, or
            the model has no ``get_input_embeddings``).
        by_layer: group name -> σ²·‖∇p‖² restricted to that group's parameters (``"embed"``,
            ``"block.0"``, ..., ``"norm"``, ``"lm_head"``, ...); the groups sum to
            `epistemic_isotropic`.
        token_logprobs: per pair, the answer tokens' log-probabilities (a tuple of floats).
        n_tokens: int64 [B], number of answer tokens.
        prediction: the `Prediction` value used.
        sigma2: the isotropic parameter variance σ².
        covariance: the `isograd.Covariance` value behind `epistemic`.
        layer_scale: the `isograd.LayerScale` rule of `epistemic_layer_scaled`.
        last_layers: the k of `epistemic_last_layers`.
        trace: with ``trace=True``, one `TokenTrace` per pair (U_E(t), U_C(t), p_t per answer
            token), else None.
        epistemic_token_max: with ``trace=True``, max_t U_E(t) per pair, else None.
        epistemic_token_mean: with ``trace=True``, mean_t U_E(t) per pair, else None.
    """

    p: torch.Tensor
    epistemic: torch.Tensor
    aleatoric: torch.Tensor
    total: torch.Tensor
    log_p: torch.Tensor
    grad_log_p: torch.Tensor
    epistemic_isotropic: torch.Tensor
    epistemic_layer_scaled: torch.Tensor
    epistemic_last_layers: torch.Tensor | None
    embedding_grad: torch.Tensor | None
    by_layer: dict[str, torch.Tensor]
    token_logprobs: tuple[tuple[float, ...], ...]
    n_tokens: torch.Tensor
    prediction: str
    sigma2: float
    covariance: str
    layer_scale: str
    last_layers: int
    trace: tuple[TokenTrace, ...] | None = None
    epistemic_token_max: torch.Tensor | None = None
    epistemic_token_mean: torch.Tensor | None = None

    @property
    def sq_grad_norm_log_p(self) -> torch.Tensor:
        """‖∇θ log p‖² [B]: the same tensor as `grad_log_p` (its earlier name)."""
        return self.grad_log_p

    def row(self, j: int) -> dict[str, Any]:
        """Pair `j` as a score row: every per-pair scalar (the [B] tensors, under their field
        names) and `row_vectors`; the row an `isograd.detect.Detector` reads."""
        return {**scalar_fields(self, j), **self.row_vectors(j)}

    def row_vectors(self, j: int) -> dict[str, Any]:
        """Pair `j`'s non-scalar signals as JSON-ready values, for a row of a run file.

        Returns:
            ``{"by_layer": {group: float}}``, plus with a trace ``"token_epistemic"`` and
            ``"token_aleatoric"`` (lists of floats, one per answer token).
        """
        out: dict[str, Any] = {"by_layer": {g: float(v[j]) for g, v in self.by_layer.items()}}
        if self.trace is not None:
            out.update(self.trace[j].row_vectors())
        return out


def scalar_fields(result: Any, j: int) -> dict[str, Any]:
    """Every per-row scalar of a dataclass result batch (tensors of shape [B]): row `j`'s value.

    Generic on purpose: a field added to `score`'s (or `score_choices`') result flows into the
    rows that `isograd qa` writes and that a detector reads.
    """
    out: dict[str, Any] = {}
    for f in fields(result):
        v = getattr(result, f.name)
        if isinstance(v, torch.Tensor) and v.ndim == 1:
            x = v[j].item()
            out[f.name] = float(x) if isinstance(x, float) else int(x)
    return out


def answer_token_logprobs(model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probabilities [B, T] of the tokens at the answer positions and their mask [B, T]."""
    ans = batch["answer_mask"]
    # logits at position t predict token t+1: keep only the span that predicts answer tokens
    cols = ans.any(0).nonzero().flatten()
    lo, hi = int(cols.min()) - 1, int(cols.max())
    logits, _ = logits_at(model, lo, hi, **forward_inputs(model, batch))
    # at least fp32 (bf16/fp16 weights), fp64 kept as is
    logp = torch.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), dim=-1)
    # the logits come out on the last device of a model split with device_map
    targets = batch["input_ids"][:, lo + 1:hi + 1].to(logp.device)
    tok = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    m = ans[:, lo + 1:hi + 1].to(logp.device)
    return tok.masked_fill(~m, 0.0), m


def _log_p(tok: torch.Tensor, m: torch.Tensor, pred: Prediction) -> torch.Tensor:
    n = m.sum(1)
    if pred is Prediction.SEQUENCE:
        return tok.sum(1)
    if pred is Prediction.GEOMETRIC:
        return tok.sum(1) / n
    first = m.float().argmax(1)  # first answer position of each row
    return tok.gather(1, first.unsqueeze(1)).squeeze(1)


@dataclass
class _Pass:
    """What one pass over encoded pairs yields, concatenated over the batches."""

    log_p: list[torch.Tensor] = field(default_factory=list)
    norms: list[torch.Tensor] = field(default_factory=list)
    toks: list[tuple[float, ...]] = field(default_factory=list)
    per_param: list[dict[str, torch.Tensor]] = field(default_factory=list)
    emb: list[torch.Tensor | None] = field(default_factory=list)


def _norm_pass(
    model: nn.Module,
    pairs: list[tuple[list[int], list[int]]],
    pred: Prediction,
    *,
    pad: int,
    padding_side: str,
    batch_size: int,
    method: str | Method,
    params: Any,
    by_param: bool,
    embedding: bool,
) -> _Pass:
    """log p, ‖∇θ log p‖² (and per parameter, and w.r.t. the input embeddings) of every pair,
    one `sq_grad_norms` call (one backward for the ghost engine) per batch."""
    out, device = _Pass(), input_device(model)
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start:start + batch_size]
        batch = pair_batch(chunk, pad, side=padding_side, device=device)
        saved: dict[str, torch.Tensor] = {}
        with contextlib.ExitStack() as stack:
            emb = stack.enter_context(capture_embedding_grad(model)) if embedding else None
            res = sq_grad_norms(model, _pair_fn(pred, saved), batch, method=method,
                                params=params, by_param=by_param)
        total, per = res if by_param else (res, None)
        # results live on the host, whatever device the model is on
        out.norms.append(total.double().cpu())
        out.log_p.append(saved["log_p"].cpu())
        for row, mrow in zip(saved["tok"].double().cpu(), saved["mask"].cpu()):
            out.toks.append(tuple(row[mrow].tolist()))
        if per is not None:
            out.per_param.append({n: v.double().cpu() for n, v in per.items()})
        out.emb.append(emb.result(total) if emb is not None else None)
    return out


def _pair_fn(pred: Prediction, saved: dict[str, torch.Tensor]):
    """fn(model, batch) -> log p [B] for sq_grad_norms; stashes detached values in `saved`."""

    def fn(m: nn.Module, b: dict[str, torch.Tensor]) -> torch.Tensor:
        tok, mask = answer_token_logprobs(m, b)
        saved["tok"], saved["mask"] = tok.detach(), mask
        lp = _log_p(tok, mask, pred)
        saved["log_p"] = lp.detach().double()
        return lp

    return fn


def _checked_pairs(model: Any, tokenizer: Any, prompts: Sequence[str],
                   answers: Sequence[Answer], verb: str, *, padding_side: str, sigma2: float,
                   **counts: int) -> list[tuple[list[int], list[int]]]:
    """The encoded (prompt ids, answer ids) pairs, after the argument checks `score` and
    `token_trace` share (`counts`: options that must be >= 1, by name)."""
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    for name, v in counts.items():
        if v < 1:
            raise ValueError(f"{name} must be >= 1, got {v}")
    if sigma2 < 0:
        raise ValueError(f"sigma2 must be >= 0, got {sigma2}")
    pairs = encode_pairs(tokenizer, prompts, answers)
    if not pairs:
        raise ValueError(f"no (prompt, answer) pairs to {verb}")
    check_context(model, [len(p) + len(a) for p, a in pairs],
                  [f"pair {i} (prompt + answer)" for i in range(len(pairs))])
    return pairs


def _trace_pairs(model: nn.Module, pairs: list[tuple[list[int], list[int]]], sigma2: float,
                 **run: Any) -> tuple[tuple[TokenTrace, ...], torch.Tensor, torch.Tensor]:
    """The per-token profiles of encoded pairs: their prefix rows through one `_norm_pass`."""
    tr = _norm_pass(model, prefix_pairs(pairs), Prediction.FIRST_TOKEN, by_param=False,
                    embedding=False, **run)
    return token_traces(pairs, torch.cat(tr.log_p), torch.cat(tr.norms), sigma2)


def token_trace(
    model: nn.Module,
    tokenizer: Any,
    prompts: Sequence[str],
    answers: Sequence[Answer],
    *,
    method: str | Method = Method.AUTO,
    sigma2: float = 1.0,
    params: Any = None,
    padding_side: str = "right",
    batch_size: int = 32,
) -> tuple[tuple[TokenTrace, ...], torch.Tensor, torch.Tensor]:
    """The per-token profile of each answer alone, without `score`'s main pass.

    The same numbers as ``score(..., trace=True)``'s ``trace``, ``epistemic_token_max`` and
    ``epistemic_token_mean`` (see `isograd.lm.trace`): U_E(t) = σ²‖∇θ p_t‖² and
    U_C(t) = p_t(1 − p_t) for every answer token, from batched passes over the prefixes.

    Args:
        model, tokenizer, prompts, answers, method, sigma2, params, padding_side: as `score`.
        batch_size: prefix rows (one per answer token) per pass; rows of several pairs share
            a pass.

    Returns:
        (one `TokenTrace` per pair, float64 [B] max_t U_E(t), float64 [B] mean_t U_E(t)).
    """
    pairs = _checked_pairs(model, tokenizer, prompts, answers, "trace", padding_side=padding_side,
                           sigma2=sigma2, batch_size=batch_size)
    return _trace_pairs(model, pairs, sigma2, pad=pad_id(tokenizer), padding_side=padding_side,
                        batch_size=batch_size, method=method, params=params)


def score(
    model: nn.Module,
    tokenizer: Any,
    prompts: Sequence[str],
    answers: Sequence[Answer],
    *,
    prediction: str | Prediction = Prediction.GEOMETRIC,
    method: str | Method = Method.AUTO,
    batch_size: int = 8,
    sigma2: float = 1.0,
    params: Any = None,
    padding_side: str = "right",
    covariance: str | Covariance = Covariance.ISOTROPIC,
    layer_scale: str | LayerScale = LayerScale.WEIGHT_VARIANCE,
    last_layers: int = LAST_LAYERS,
    trace: bool = False,
    trace_batch_size: int = 32,
) -> LMScores:
    """Prediction p, epistemic ‖∇p‖², aleatoric p(1−p) of each (prompt, answer) pair, and the
    other signals of the same backward (see `LMScores`).

    Args:
        model: a causal LM (Hugging Face ``...ForCausalLM`` or anything returning ``.logits``).
        tokenizer: its tokenizer.
        prompts: B prompt texts, e.g. from `qa_prompt` (tokenized without added special tokens).
        answers: B answers: a text (appended to the prompt verbatim) or the answer's token ids
            (exactly what was generated).
        prediction: "geometric" (default), "sequence" or "first_token". Why geometric: each
            token of a greedy answer is an argmax decision, and the geometric mean keeps p on
            the scale of one such decision (like a classifier's predicted-class probability),
            whatever the answer's length. The sequence product of a sentence-long answer is
            tiny (median 8e-5 on SmolLM2 TriviaQA answers), where p(1−p) ≈ p and
            ‖∇p‖² = p²‖∇log p‖² are both driven by p itself: a confidence, not an uncertainty
            (measured: each results/qa report's "definition of p" table).
        method: norm engine ("auto", "loop", "ghost"; see `isograd.Method`).
        batch_size: pairs per forward pass.
        sigma2: isotropic parameter variance σ² (scales the epistemic terms only).
        params: parameter selection (see `isograd.sq_grad_norms`); None = all parameters.
        padding_side: "right" or "left"; results are identical either way.
        covariance: which epistemic term is `epistemic` (and in `total`): "isotropic" (σ²I,
            the paper's, default) or "layer-scaled" (σ²·blockdiag(s_l I)); both are always
            returned, from the same backward.
        layer_scale: the data-free rule of s_l: "weight-variance" (default) or "fan-in" (see
            `isograd.LayerScale`).
        last_layers: k of `LMScores.epistemic_last_layers` (default 5, see
            `isograd.lm.signals.LAST_LAYERS`).
        trace: also compute the per-token profile (`LMScores.trace`): one more batched pass
            over the answers' prefixes, about T times the work of the main pass.
        trace_batch_size: prefix rows (one per answer token) per pass of the trace; rows of
            several pairs share a pass, whatever `batch_size` is.

    Returns:
        `LMScores` with float64 [B] tensors on the CPU.
    """
    pred = Prediction.parse(prediction)
    cov = Covariance.parse(covariance)
    rule = LayerScale.parse(layer_scale)
    pairs = _checked_pairs(model, tokenizer, prompts, answers, "score", padding_side=padding_side,
                           sigma2=sigma2, batch_size=batch_size,
                           trace_batch_size=trace_batch_size, last_layers=last_layers)
    run = dict(pad=pad_id(tokenizer), padding_side=padding_side, batch_size=batch_size,
               method=method, params=params)
    res = _norm_pass(model, pairs, pred, by_param=True, embedding=True, **run)
    log_p = torch.cat(res.log_p)
    sq_log = torch.cat(res.norms)
    p = log_p.exp()
    p2 = sigma2 * torch.exp(2 * log_p)  # σ²‖∇p‖² = σ²p²‖∇log p‖²
    per_param = {n: torch.cat([d[n] for d in res.per_param]).double() for n in res.per_param[0]}
    iso = p2 * sq_log
    scaled = p2 * layer_scaled_sq_norms(
        per_param, model_layer_variances(model, list(per_param), rule.value))
    epi = scaled if cov is Covariance.LAYER_SCALED else iso
    groups = group_norms(per_param)
    layers = {g: p2 * v for g, v in groups.items()}
    last = None
    if any(g.startswith("block.") for g in groups):
        last = sum((layers[g] for g in last_blocks(model, last_layers) if g in layers),
                   torch.zeros_like(iso))
    emb = None if any(e is None for e in res.emb) else torch.cat(res.emb)
    traced: dict[str, Any] = {}
    if trace:
        traced = dict(zip(("trace", "epistemic_token_max", "epistemic_token_mean"),
                          _trace_pairs(model, pairs, sigma2, **{**run, "batch_size": trace_batch_size})))
    alea = p * (1 - p)
    return LMScores(
        p=p, epistemic=epi, aleatoric=alea, total=epi + alea, log_p=log_p, grad_log_p=sq_log,
        epistemic_isotropic=iso, epistemic_layer_scaled=scaled, epistemic_last_layers=last, embedding_grad=emb, by_layer=layers,
        token_logprobs=tuple(res.toks),
        n_tokens=torch.tensor([len(a) for _, a in pairs], dtype=torch.long, device="cpu"),
        prediction=pred.value, sigma2=float(sigma2), covariance=cov.value,
        layer_scale=rule.value, last_layers=int(last_layers), **traced,
    )
