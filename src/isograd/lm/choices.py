"""Multiple choice: `score_choices` (the model picks the option of highest log-likelihood).

p = softmax over the options' summed answer-token log-likelihoods, taken at the pick; its
gradient flows through the softmax, i.e. through every option's likelihood.

Two equivalent ways to run the options through the model:

* packed (default when the model accepts it): one row per question, ``prompt + option_1 + ...
  + option_K``, with a 4-D attention mask that lets each option see the prompt and its own
  earlier tokens only, and position ids that restart after the prompt for every option. The
  prompt is processed once instead of K times, and since one row is one question, the batched
  norm engine applies ("auto"). Whether a model honours a custom 4-D mask is checked once per
  model on the first question (option log-likelihoods against the rows path, 1e-4); if not,
  the rows path is used with a warning.
* rows: one padded row per option; one question spans several rows, so norms use the loop
  engine.
"""

from __future__ import annotations

import contextlib
import warnings
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..norms.api import Method, sq_grad_norms
from .batching import (
    encode_pairs,
    forward_inputs,
    input_device,
    logits_at,
    pad_id,
    pair_batch,
    to_device,
)
from .score import answer_token_logprobs, scalar_fields
from .signals import capture_embedding_grad, group_norms


@dataclass(frozen=True)
class ChoiceScores:
    """Multiple-choice scores per question; tensors are float64 [Q] unless noted.

    Attributes:
        pick: int64 [Q], index of the option with the highest summed log-likelihood.
        p: softmax over the options' summed log-likelihoods, at `pick`.
        epistemic: σ²·‖∇θ p‖² (the gradient flows through the softmax, all options).
        aleatoric: p(1−p).
        total: epistemic + aleatoric.
        log_p: log p (finite where p underflows).
        grad_log_p: ‖∇θ log p‖² (no p², no σ²), as `LMScores.grad_log_p`.
        embedding_grad: ‖∂ log p / ∂e‖² over the input embeddings e of the prompt (once) and of
            every option, as `LMScores.embedding_grad`; None when not reached.
        n_tokens: int64 [Q], the picked option's number of tokens.
        option_logliks: per question, each option's summed answer-token log-likelihood.
        pick_token_ids: per question, the picked option's token ids.
        pick_token_logprobs: per question, the picked option's token log-probabilities.
        by_layer: group name -> σ²·‖∇p‖² restricted to that group (as `LMScores.by_layer`),
            or None (``by_layer=False``).
        sigma2: σ².
    """

    pick: torch.Tensor
    p: torch.Tensor
    epistemic: torch.Tensor
    aleatoric: torch.Tensor
    total: torch.Tensor
    option_logliks: tuple[tuple[float, ...], ...]
    pick_token_ids: tuple[tuple[int, ...], ...]
    pick_token_logprobs: tuple[tuple[float, ...], ...]
    by_layer: dict[str, torch.Tensor] | None
    sigma2: float
    log_p: torch.Tensor | None = None
    grad_log_p: torch.Tensor | None = None
    embedding_grad: torch.Tensor | None = None
    n_tokens: torch.Tensor | None = None

    def row(self, j: int) -> dict[str, Any]:
        """Question `j` as a score row: every per-question scalar under its field name and
        the ``by_layer`` vector (when computed), the fields `LMScores.row` writes."""
        out = scalar_fields(self, j)
        out.pop("pick", None)
        if self.by_layer is not None:
            out["by_layer"] = {g: float(v[j]) for g, v in self.by_layer.items()}
        return out


_PACKED_OK: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _record(saved: dict[str, Any], ll: torch.Tensor, k: int, ids: Sequence[int],
            lps: torch.Tensor) -> None:
    saved["pick"].append(k)
    saved["ll"].append(tuple(float(x) for x in ll.detach().double()))
    saved["ids"].append(tuple(int(t) for t in ids))
    saved["lps"].append(tuple(float(x) for x in lps.detach().double()))


# ----------------------------------------------------------------------------- rows path


def _rows_fn(saved: dict[str, Any]):
    """fn(model, batch) -> log softmax-probability of the picked option [Q] (rows layout)."""

    def fn(m: nn.Module, b: dict[str, torch.Tensor]) -> torch.Tensor:
        tok, mask = answer_token_logprobs(m, b)
        ll = tok.sum(1)  # [R] summed log-likelihood of each option row
        out = []
        for q in range(b["question"].shape[0]):
            rows = (b["owner"] == q).nonzero().flatten().to(ll.device)
            lq = ll[rows]
            k = int(lq.detach().argmax())
            out.append(lq[k] - torch.logsumexp(lq, 0))
            r = int(rows[k])
            _record(saved, lq, k, b["input_ids"][r][b["answer_mask"][r]].tolist(),
                    tok[r][mask[r]])
        lp = torch.stack(out)
        saved["log_p"] = lp.detach().double()
        return lp

    return fn


def _rows_batch(items: list[tuple[list[int], list[list[int]]]], pad: int,
                device: torch.device) -> dict[str, torch.Tensor]:
    pairs = [(p, o) for p, opts in items for o in opts]
    owner = [q for q, (_, opts) in enumerate(items) for _ in opts]
    batch = pair_batch(pairs, pad, side="right", device=device)
    # the question index comes first: sq_grad_norms reads the batch size Q from it
    return {"question": torch.arange(len(items), device=device),
            "owner": torch.tensor(owner, device=device), **batch}


# ----------------------------------------------------------------------------- packed path


def _packed_batch(items: list[tuple[list[int], list[list[int]]]], pad: int,
                  dtype: torch.dtype, device: torch.device) -> dict[str, torch.Tensor]:
    """One row per question: prompt + all options, a 4-D mask, restarted position ids.

    Also [Q, T] index tensors over the option tokens: ``pred`` (position whose logits predict
    the token), ``target`` (the token), ``option`` (its option index, -1 for padding).
    Built on the host (many small writes), then moved to `device` at once.
    """
    cpu = torch.device("cpu")
    lengths = [len(p) + sum(len(o) for o in opts) for p, opts in items]
    width, q_n = max(lengths), len(items)
    t_n = max(sum(len(o) for o in opts) for _, opts in items)
    ids = torch.full((q_n, width), pad, dtype=torch.long, device=cpu)
    pos = torch.zeros(q_n, width, dtype=torch.long, device=cpu)
    # padding sees itself only
    allow = torch.eye(width, dtype=torch.bool, device=cpu).repeat(q_n, 1, 1)
    pred = torch.zeros(q_n, t_n, dtype=torch.long, device=cpu)
    target = torch.full((q_n, t_n), pad, dtype=torch.long, device=cpu)
    option = torch.full((q_n, t_n), -1, dtype=torch.long, device=cpu)
    for q, (p, opts) in enumerate(items):
        n = len(p)
        ids[q, :n] = torch.tensor(p, device=cpu)
        pos[q, :n] = torch.arange(n, device=cpu)
        allow[q, :n, :n] = torch.ones(n, n, dtype=torch.bool, device=cpu).tril()
        start, t = n, 0
        for j, o in enumerate(opts):
            m = len(o)
            ids[q, start:start + m] = torch.tensor(o, device=cpu)
            pos[q, start:start + m] = torch.arange(n, n + m, device=cpu)
            allow[q, start:start + m, :n] = True
            allow[q, start:start + m, start:start + m] = torch.ones(
                m, m, dtype=torch.bool, device=cpu).tril()
            pred[q, t:t + m] = torch.tensor([n - 1] + list(range(start, start + m - 1)), device=cpu)
            target[q, t:t + m] = torch.tensor(o, device=cpu)
            option[q, t:t + m] = j
            start, t = start + m, t + m
    mask = torch.zeros(q_n, 1, width, width, dtype=dtype, device=cpu)
    mask.masked_fill_(~allow[:, None], torch.finfo(dtype).min)
    return to_device({"input_ids": ids, "attention_mask": mask, "position_ids": pos,
                      "pred": pred, "target": target, "option": option,
                      "n_options": torch.tensor([len(opts) for _, opts in items], device=cpu)},
                     device)


def _packed_logliks(m: nn.Module, b: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Option log-likelihoods [Q, K] (-inf beyond a question's options) and token log-probs [Q, T]."""
    lo = int(b["pred"][b["option"] >= 0].min())
    # only the positions that predict option tokens
    logits, _ = logits_at(m, lo, b["input_ids"].shape[1], **forward_inputs(m, b))
    logp = torch.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), -1)
    # the logits come out on the last device of a model split with device_map
    ix = {k: b[k].to(logp.device) for k in ("pred", "target", "option", "n_options")}
    rows = torch.arange(logp.shape[0], device=logp.device)[:, None]
    tok = logp[rows, (ix["pred"] - lo).clamp(min=0), ix["target"]]
    tok = tok.masked_fill(ix["option"] < 0, 0.0)
    k_max = int(ix["n_options"].max())
    ll = torch.zeros(tok.shape[0], k_max, dtype=tok.dtype, device=tok.device).scatter_add(
        1, ix["option"].clamp(min=0), tok)
    beyond = torch.arange(k_max, device=tok.device)[None] >= ix["n_options"][:, None]
    return ll.masked_fill(beyond, float("-inf")), tok


def _packed_fn(saved: dict[str, Any]):
    def fn(m: nn.Module, b: dict[str, torch.Tensor]) -> torch.Tensor:
        ll, tok = _packed_logliks(m, b)
        picks = ll.detach().argmax(1)
        lp = ll.gather(1, picks[:, None])[:, 0] - torch.logsumexp(ll, 1)
        for q, k in enumerate(picks.tolist()):
            sel = b["option"][q] == k
            _record(saved, ll[q, : int(b["n_options"][q])], k, b["target"][q][sel].tolist(),
                    tok[q][sel.to(tok.device)])
        saved["log_p"] = lp.detach().double()
        return lp

    return fn


def _packed_works(model: nn.Module, item: tuple[list[int], list[list[int]]], pad: int) -> bool:
    """Does `model` honour a custom 4-D attention mask? Checked once per model."""
    try:
        return _PACKED_OK[model]
    except (KeyError, TypeError):
        pass
    dtype, device = next(model.parameters()).dtype, input_device(model)
    try:
        with torch.no_grad():
            ll, _ = _packed_logliks(model, _packed_batch([item], pad, dtype, device))
            b = _rows_batch([item], pad, device)
            ref = answer_token_logprobs(model, b)[0].sum(1)
        ok = bool(torch.allclose(ll[0].double(), ref.double(), rtol=1e-4, atol=1e-4))
    except Exception:  # noqa: BLE001 - any failure means: use the rows path
        ok = False
    if not ok:
        warnings.warn(f"{type(model).__name__} does not honour a custom 4-D attention mask; "
                      "multiple choice uses one row per option (slower)", stacklevel=3)
    try:
        _PACKED_OK[model] = ok
    except TypeError:
        pass
    return ok


def score_choices(
    model: nn.Module,
    tokenizer: Any,
    prompts: Sequence[str],
    options: Sequence[Sequence[str]],
    *,
    by_layer: bool = True,
    batch_size: int = 4,
    sigma2: float = 1.0,
    params: Any = None,
    packed: bool | None = None,
    method: str | Method = Method.AUTO,
) -> ChoiceScores:
    """Multiple choice: pick = the option of highest summed log-likelihood; p, epistemic, aleatoric.

    Args:
        model, tokenizer: the causal LM.
        prompts: Q prompt texts (e.g. `mc_prompt`).
        options: Q lists of >= 2 option texts (each appended to its prompt verbatim).
        by_layer: also return the per-group breakdown (default, as `score` always does).
        batch_size: questions per forward pass.
        sigma2, params: as in `score`.
        packed: one row per question with a 4-D mask (True), one row per option (False), or
            None: packed when the model passes a one-time check (module docstring).
        method: norm engine for the packed path ("auto", "loop", "ghost"); the rows path
            always uses "loop".

    Returns:
        `ChoiceScores` with float64 [Q] tensors on the CPU.
    """
    if len(prompts) != len(options):
        raise ValueError(f"{len(prompts)} prompts but {len(options)} option lists")
    if sigma2 < 0:
        raise ValueError(f"sigma2 must be >= 0, got {sigma2}")
    pad, device = pad_id(tokenizer), input_device(model)
    items = []
    for q, (prompt, opts) in enumerate(zip(prompts, options)):
        if len(opts) < 2:
            raise ValueError(f"question {q}: multiple choice needs >= 2 options")
        pairs = encode_pairs(tokenizer, [prompt] * len(opts), list(opts))
        items.append((pairs[0][0], [a for _, a in pairs]))
    if packed is None:
        packed = _packed_works(model, items[0], pad)
    dtype = next(model.parameters()).dtype
    keys = ("pick", "ll", "ids", "lps")
    saved_all: dict[str, list] = {k: [] for k in keys}
    log_ps, norms, groups, embs = [], [], [], []
    for start in range(0, len(items), batch_size):
        chunk = items[start:start + batch_size]
        saved: dict[str, Any] = {k: [] for k in keys}
        with contextlib.ExitStack() as stack:
            if packed:
                batch = _packed_batch(chunk, pad, dtype, device)
                emb = stack.enter_context(capture_embedding_grad(model))
                res = sq_grad_norms(model, _packed_fn(saved), batch, method=method,
                                    params=params, by_param=by_layer)
            else:
                batch = _rows_batch(chunk, pad, device)
                # one row per option: the prompt positions are shared by the question's rows
                shared = torch.tensor([len(p) for p, opts in chunk for _ in opts], device="cpu")
                emb = stack.enter_context(capture_embedding_grad(model, batch["owner"], shared))
                res = sq_grad_norms(model, _rows_fn(saved), batch, method="loop",
                                    params=params, by_param=by_layer)
        total, per = res if by_layer else (res, None)
        # results live on the host, whatever device the model is on
        norms.append(total.double().cpu())
        embs.append(emb.result(total))
        log_ps.append(saved["log_p"].cpu())
        n = len(chunk)  # an engine may call fn more than once: keep the last call's records
        for k in keys:
            saved_all[k] += saved[k][-n:]
        if per is not None:
            groups.append({g: v.double().cpu() for g, v in group_norms(per).items()})
    log_p = torch.cat(log_ps)
    p = log_p.exp()
    grad_log_p = torch.cat(norms)
    epi = sigma2 * p.square() * grad_log_p
    alea = p * (1 - p)
    layers = None
    if by_layer:
        layers = {g: sigma2 * p.square() * torch.cat([d[g] for d in groups]).double()
                  for g in groups[0]}
    return ChoiceScores(
        pick=torch.tensor(saved_all["pick"], dtype=torch.long, device="cpu"), p=p, epistemic=epi,
        aleatoric=alea, total=epi + alea, option_logliks=tuple(saved_all["ll"]),
        pick_token_ids=tuple(saved_all["ids"]), pick_token_logprobs=tuple(saved_all["lps"]),
        by_layer=layers, sigma2=float(sigma2), log_p=log_p, grad_log_p=grad_log_p,
        embedding_grad=None if any(e is None for e in embs) else torch.cat(embs),
        n_tokens=torch.tensor([len(i) for i in saved_all["ids"]], dtype=torch.long, device="cpu"),
    )

