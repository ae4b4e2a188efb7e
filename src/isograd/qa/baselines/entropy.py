"""Probability and entropy baselines: naive (predictive) entropy, MSP, mean token entropy.

- ``naive_entropy`` (Kuhn et al. 2023's length-normalised predictive entropy, Farquhar et al.
  2024's "naive entropy"): the Monte-Carlo estimate over K sampled answers
  ``H ≈ −(1/K) Σ_k (1/L_k) Σ_t log p(s_k,t | x, s_k,<t)``: minus the mean over samples of each
  sample's mean token log-probability (untempered). K=10, T=1.0 by default. An empty sample
  (the model stopped at once) contributes 0.
- ``msp`` (maximum sequence probability, as LM-Polygraph reports it): ``−log p(answer)`` =
  minus the sum of the greedy answer's token log-probabilities. Monotone in 1 − p, so both
  give the same rank metrics; −log p does not underflow. No extra forward pass.
- ``mean_token_entropy``: mean over the greedy answer's tokens of the entropy of the full
  next-token distribution at that position, ``−Σ_v p(v) log p(v)``; one forward over
  prompt + answer. An empty answer uses the distribution at its first (stop) position.
All three: higher = more uncertain.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from ...lm.batching import encode_prompt
from ...lm.sampling import Sample
from ._lm import forward_batch
from .base import BaselineResult, QAContext, get_samples


def predictive_entropy(samples: Sequence[Sample]) -> float:
    """−mean_k of the samples' length-normalised log-probabilities (nats)."""
    if not samples:
        raise ValueError("no samples")
    return -sum(s.mean_logprob for s in samples) / len(samples)


@dataclass(frozen=True)
class NaiveEntropy:
    """Length-normalised predictive entropy of K samples (module docstring).

    Attributes:
        k, temperature, max_new_tokens, seed: sampling options, used when ``ctx.samples`` is None.
    """

    k: int = 10
    temperature: float = 1.0
    max_new_tokens: int = 32
    seed: int = 0

    name: ClassVar[str] = "naive_entropy"
    label: ClassVar[str] = "naive entropy"
    needs_samples: ClassVar[bool] = True
    higher_is_uncertain: ClassVar[bool] = True

    def __call__(self, model: Any, tokenizer: Any, ctx: QAContext) -> BaselineResult:
        samples, cost = get_samples(model, tokenizer, ctx, k=self.k, temperature=self.temperature,
                                    max_new_tokens=self.max_new_tokens, seed=self.seed)
        return BaselineResult(value=predictive_entropy(samples), forward_passes=cost)


def _answer_logits(model: Any, tokenizer: Any, ctx: QAContext) -> torch.Tensor:
    """Logits float32 [L+1, V] predicting each greedy answer token and then the stop."""
    prompt = encode_prompt(tokenizer, ctx.prompt)
    ids = prompt + list(ctx.answer.token_ids)
    logits, _, _ = forward_batch(model, [ids], keep=len(ctx.answer.token_ids) + 1)
    return logits[0]


@dataclass(frozen=True)
class MSP:
    """Maximum sequence probability as an uncertainty: −log p(greedy answer)."""

    name: ClassVar[str] = "msp"
    label: ClassVar[str] = "maximum sequence probability"
    needs_samples: ClassVar[bool] = False
    higher_is_uncertain: ClassVar[bool] = True

    def __call__(self, model: Any, tokenizer: Any, ctx: QAContext) -> BaselineResult:
        a = ctx.answer
        if len(a.token_logprobs) == len(a.token_ids):
            return BaselineResult(value=-a.logprob, forward_passes=0.0)
        # an answer without its log-probabilities: one forward recovers them
        logp = _answer_logits(model, tokenizer, ctx).double().log_softmax(-1)[:-1]
        ids = torch.as_tensor(a.token_ids, device=logp.device)
        lp = logp.gather(1, ids[:, None]).sum()
        return BaselineResult(value=-float(lp), forward_passes=1.0)


@dataclass(frozen=True)
class MeanTokenEntropy:
    """Mean next-token entropy over the greedy answer's tokens (module docstring)."""

    name: ClassVar[str] = "mean_token_entropy"
    label: ClassVar[str] = "mean token entropy"
    needs_samples: ClassVar[bool] = False
    higher_is_uncertain: ClassVar[bool] = True

    def __call__(self, model: Any, tokenizer: Any, ctx: QAContext) -> BaselineResult:
        logits = _answer_logits(model, tokenizer, ctx).double()
        n = len(ctx.answer.token_ids)
        rows = logits[:n] if n else logits[:1]
        ent = torch.special.entr(rows.softmax(-1)).sum(-1)  # entr(0) = 0: masked logits are fine
        value = float(ent.mean())
        if not math.isfinite(value):
            raise FloatingPointError("non-finite token entropy")
        return BaselineResult(value=value, forward_passes=1.0)
