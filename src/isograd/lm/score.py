"""Gradient-norm uncertainty of (prompt, answer) pairs of a causal LM: `score`.

For each pair the prediction p is a probability of the answer given the prompt (see
`Prediction`); epistemic = σ²·‖∇θ p‖², aleatoric = p(1−p), total = their sum (PAPER.md).
p is computed through log p and the norm as ‖∇p‖² = p²·‖∇ log p‖², which stays finite when
p underflows (a long answer's product of token probabilities).

Padding never changes a number: batches are padded (right by default, or left), with the
attention mask and position ids set so every row sees exactly what it would see alone.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .._choice import Choice
from ..norms.api import Method, sq_grad_norms
from .prompts import encode_answer, encode_prompt


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

    Attributes:
        p: the prediction (see `Prediction`).
        epistemic: σ²·‖∇θ p‖².
        aleatoric: p(1−p).
        total: epistemic + aleatoric.
        log_p: log p (finite even where p underflows to 0).
        sq_grad_norm_log_p: ‖∇θ log p‖² (the norm actually back-propagated).
        token_logprobs: per pair, the answer tokens' log-probabilities (a tuple of floats).
        n_tokens: int64 [B], number of answer tokens.
        by_layer: with ``by_layer=True``, group name -> σ²·‖∇p‖² restricted to that group's
            parameters (``"embed"``, ``"block.0"``, ..., ``"final_norm"``, ...); the groups
            sum to `epistemic`. Else None.
        prediction: the `Prediction` value used.
        sigma2: the isotropic parameter variance σ².
    """

    p: torch.Tensor
    epistemic: torch.Tensor
    aleatoric: torch.Tensor
    total: torch.Tensor
    log_p: torch.Tensor
    sq_grad_norm_log_p: torch.Tensor
    token_logprobs: tuple[tuple[float, ...], ...]
    n_tokens: torch.Tensor
    by_layer: dict[str, torch.Tensor] | None
    prediction: str
    sigma2: float


Answer = str | Sequence[int]

_BLOCK = re.compile(r"(?:^|\.)(?:layers|h|blocks|layer|decoder_layers)\.(\d+)\.")
_EMBED = re.compile(r"(embed|wte|wpe|word_embeddings|position_embeddings)")
_PREFIX = re.compile(r"^(model|transformer|gpt_neox|base_model)\.")


def layer_group(name: str) -> str:
    """Group of a parameter name: ``block.<i>`` for transformer block i, ``embed`` for
    embeddings, else the name without its model prefix and ``.weight``/``.bias`` suffix."""
    m = _BLOCK.search(name)
    if m:
        return f"block.{int(m.group(1))}"
    if _EMBED.search(name):
        return "embed"
    base = _PREFIX.sub("", name)
    return re.sub(r"\.(weight|bias)$", "", base)


def _pad_id(tokenizer: Any) -> int:
    for attr in ("pad_token_id", "eos_token_id"):
        v = getattr(tokenizer, attr, None)
        if isinstance(v, int):
            return v
    return 0


def _encode_pairs(
    tokenizer: Any, prompts: Sequence[str], answers: Sequence[Answer]
) -> list[tuple[list[int], list[int]]]:
    if len(prompts) != len(answers):
        raise ValueError(f"{len(prompts)} prompts but {len(answers)} answers")
    pairs = []
    for i, (prompt, ans) in enumerate(zip(prompts, answers)):
        p_ids = encode_prompt(tokenizer, prompt)
        a_ids = encode_answer(tokenizer, prompt, ans) if isinstance(ans, str) else [int(t) for t in ans]
        if not p_ids:
            raise ValueError(f"pair {i}: the prompt has no tokens")
        if not a_ids:
            raise ValueError(f"pair {i}: the answer has no tokens (score the stop token instead)")
        pairs.append((p_ids, a_ids))
    return pairs


def _make_batch(
    pairs: list[tuple[list[int], list[int]]], pad_id: int, padding_side: str
) -> dict[str, torch.Tensor]:
    """Padded input_ids / attention_mask / position_ids [B, L] and the answer-token mask."""
    lengths = [len(p) + len(a) for p, a in pairs]
    width = max(lengths)
    b = len(pairs)
    ids = torch.full((b, width), pad_id, dtype=torch.long)
    mask = torch.zeros(b, width, dtype=torch.long)
    answer = torch.zeros(b, width, dtype=torch.bool)  # True at positions holding answer tokens
    for i, (p, a) in enumerate(pairs):
        off = width - lengths[i] if padding_side == "left" else 0
        ids[i, off:off + lengths[i]] = torch.tensor(p + a)
        mask[i, off:off + lengths[i]] = 1
        answer[i, off + len(p):off + lengths[i]] = True
    pos = (mask.cumsum(1) - 1).clamp(min=0)
    return {"input_ids": ids, "attention_mask": mask, "position_ids": pos, "answer_mask": answer}


def _accepts_logits_to_keep(model: nn.Module) -> bool:
    try:
        return "logits_to_keep" in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


def _token_logprobs(model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probabilities [B, T] of the tokens at the answer positions and their mask [B, T]."""
    ans = batch["answer_mask"]
    # logits at position t predict token t+1: keep only the span that predicts answer tokens
    cols = ans.any(0).nonzero().flatten()
    lo, hi = int(cols.min()) - 1, int(cols.max())
    kwargs = {k: batch[k] for k in ("input_ids", "attention_mask", "position_ids")}
    keep = torch.arange(lo, hi)
    if _accepts_logits_to_keep(model):
        logits = model(**kwargs, logits_to_keep=keep).logits
    else:
        logits = model(**kwargs).logits[:, lo:hi]
    # at least fp32 (bf16/fp16 weights), fp64 kept as is
    logp = torch.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), dim=-1)
    targets = batch["input_ids"][:, lo + 1:hi + 1]
    tok = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    m = ans[:, lo + 1:hi + 1]
    return tok.masked_fill(~m, 0.0), m


def _log_p(tok: torch.Tensor, m: torch.Tensor, pred: Prediction) -> torch.Tensor:
    n = m.sum(1)
    if pred is Prediction.SEQUENCE:
        return tok.sum(1)
    if pred is Prediction.GEOMETRIC:
        return tok.sum(1) / n
    first = m.float().argmax(1)  # first answer position of each row
    return tok.gather(1, first.unsqueeze(1)).squeeze(1)


def _group(per_param: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for name, v in per_param.items():
        g = layer_group(name)
        out[g] = out[g] + v if g in out else v.clone()
    return out


def _pair_fn(pred: Prediction, saved: dict[str, torch.Tensor]):
    """fn(model, batch) -> log p [B] for sq_grad_norms; stashes detached values in `saved`."""

    def fn(m: nn.Module, b: dict[str, torch.Tensor]) -> torch.Tensor:
        tok, mask = _token_logprobs(m, b)
        saved["tok"], saved["mask"] = tok.detach(), mask
        lp = _log_p(tok, mask, pred)
        saved["log_p"] = lp.detach().double()
        return lp

    return fn


def score(
    model: nn.Module,
    tokenizer: Any,
    prompts: Sequence[str],
    answers: Sequence[Answer],
    *,
    prediction: str | Prediction = Prediction.GEOMETRIC,
    by_layer: bool = False,
    method: str | Method = Method.AUTO,
    batch_size: int = 8,
    sigma2: float = 1.0,
    params: Any = None,
    padding_side: str = "right",
) -> LMScores:
    """Prediction p, epistemic ‖∇p‖², aleatoric p(1−p) of each (prompt, answer) pair.

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
        by_layer: also return the per-group breakdown (``LMScores.by_layer``).
        method: norm engine ("auto", "loop", "ghost"; see `isograd.Method`).
        batch_size: pairs per forward pass.
        sigma2: isotropic parameter variance σ² (scales epistemic only).
        params: parameter selection (see `isograd.sq_grad_norms`); None = all parameters.
        padding_side: "right" or "left"; results are identical either way.

    Returns:
        `LMScores` with float64 [B] tensors.
    """
    pred = Prediction.parse(prediction)
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if sigma2 < 0:
        raise ValueError(f"sigma2 must be >= 0, got {sigma2}")
    pairs = _encode_pairs(tokenizer, prompts, answers)
    if not pairs:
        raise ValueError("no (prompt, answer) pairs to score")
    pad = _pad_id(tokenizer)
    log_ps, norms, toks, groups = [], [], [], []
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start:start + batch_size]
        batch = _make_batch(chunk, pad, padding_side)
        saved: dict[str, torch.Tensor] = {}
        res = sq_grad_norms(model, _pair_fn(pred, saved), batch, method=method, params=params,
                            by_param=by_layer)
        total, per = res if by_layer else (res, None)
        norms.append(total.double())
        log_ps.append(saved["log_p"])
        for row, mrow in zip(saved["tok"], saved["mask"]):
            toks.append(tuple(float(x) for x in row[mrow].double()))
        if per is not None:
            groups.append(_group(per))
    log_p = torch.cat(log_ps)
    sq_log = torch.cat(norms)
    p = log_p.exp()
    epi = sigma2 * torch.exp(2 * log_p) * sq_log  # ‖∇p‖² = p²‖∇log p‖²
    alea = p * (1 - p)
    layers = None
    if by_layer:
        layers = {g: sigma2 * torch.exp(2 * log_p) * torch.cat([d[g] for d in groups]).double()
                  for g in groups[0]}
    return LMScores(
        p=p, epistemic=epi, aleatoric=alea, total=epi + alea, log_p=log_p,
        sq_grad_norm_log_p=sq_log, token_logprobs=tuple(toks),
        n_tokens=torch.tensor([len(a) for _, a in pairs], dtype=torch.long),
        by_layer=layers, prediction=pred.value, sigma2=float(sigma2),
    )
