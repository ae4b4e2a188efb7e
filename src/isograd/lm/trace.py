"""Per-token uncertainty profile of an answer: U_E(t) = σ²‖∇θ p_t‖², U_C(t) = p_t(1 − p_t).

p_t = p(v_t | prompt, v_<t) is the model's probability of answer token t. Its gradient differs
for every t, so the profile needs T gradient norms per answer. They are computed in batches,
not one backward per token: each (prompt, answer) pair of T tokens is expanded into T pairs
(prompt + v_<t, v_t) with a one-token answer, and those rows go through the same batched norm
engine as `score`. Causal attention makes row t's forward exactly the full answer's forward
up to position t, so each row's norm is exactly ‖∇θ log p_t‖² (then ‖∇p_t‖² = p_t²‖∇log p_t‖²).
Cost: the rows hold Σ_t (prompt + t) tokens instead of prompt + T, so roughly T times the
work of one forward and backward of the full answer (measured: benchmarks/bench_trace.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class TokenTrace:
    """The profile of one answer of T tokens; tensors are float64 [T].

    Attributes:
        token_ids: the answer's token ids (T).
        p: p_t, the probability of token t given the prompt and the tokens before it.
        epistemic: U_E(t) = σ²·‖∇θ p_t‖².
        aleatoric: U_C(t) = p_t(1 − p_t).
    """

    token_ids: tuple[int, ...]
    p: torch.Tensor
    epistemic: torch.Tensor
    aleatoric: torch.Tensor

    def row_vectors(self) -> dict[str, list[float]]:
        """``{"token_epistemic": [...], "token_aleatoric": [...]}``, JSON-ready (a run row's
        profile)."""
        return {"token_epistemic": [float(x) for x in self.epistemic],
                "token_aleatoric": [float(x) for x in self.aleatoric]}


def prefix_pairs(pairs: Sequence[tuple[list[int], list[int]]]) -> list[tuple[list[int], list[int]]]:
    """Expand each (prompt ids, answer ids) pair into its T one-token pairs (prompt + v_<t, [v_t]).

    Row order: pair 0's tokens 0..T0−1, then pair 1's, and so on.
    """
    return [(list(p) + list(a[:t]), [a[t]]) for p, a in pairs for t in range(len(a))]


def token_traces(
    pairs: Sequence[tuple[list[int], list[int]]],
    log_p: torch.Tensor,
    sq_grad_log_p: torch.Tensor,
    sigma2: float,
) -> tuple[tuple[TokenTrace, ...], torch.Tensor, torch.Tensor]:
    """Split the expanded rows' results back per pair.

    Args:
        pairs: the B original (prompt ids, answer ids) pairs.
        log_p: float64 [N], log p_t of the `prefix_pairs` rows (N = Σ T_i).
        sq_grad_log_p: float64 [N], ‖∇θ log p_t‖² of those rows.
        sigma2: σ².

    Returns:
        (one `TokenTrace` per pair, epistemic_token_max [B], epistemic_token_mean [B]).
    """
    p = log_p.exp()
    epi = sigma2 * torch.exp(2 * log_p) * sq_grad_log_p
    traces, start = [], 0
    for _, a in pairs:
        sl = slice(start, start + len(a))
        traces.append(TokenTrace(token_ids=tuple(int(t) for t in a), p=p[sl],
                                 epistemic=epi[sl], aleatoric=p[sl] * (1 - p[sl])))
        start += len(a)
    if start != len(log_p):
        raise ValueError(f"{len(log_p)} token rows for {start} answer tokens")
    tmax = torch.stack([t.epistemic.max() for t in traces])
    tmean = torch.stack([t.epistemic.mean() for t in traces])
    return tuple(traces), tmax, tmean
