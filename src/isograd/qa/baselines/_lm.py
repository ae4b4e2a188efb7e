"""Forward-pass plumbing shared by the baselines: padded batches, option probabilities, prompts.

Batches are left-padded with explicit position ids, so every row sees exactly what it would
see alone and the last position is the same for all rows: only the last ``keep`` positions'
logits are computed (``logits_to_keep``), which keeps memory at B x keep x vocab.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ...lm.batching import (
    batchable,
    encode_prompt,
    eval_mode,
    forward_inputs,
    input_device,
    logits_at,
    pad,
)
from ...lm.prompts import bos_text, has_chat_template


@torch.no_grad()
def forward_batch(
    model: Any,
    seqs: Sequence[Sequence[int]],
    *,
    keep: int = 1,
    hidden: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, ...] | None]:
    """One forward over left-padded token sequences.

    Args:
        model: causal LM.
        seqs: N token-id sequences (each non-empty).
        keep: number of final positions whose logits are returned.
        hidden: also return every layer's hidden states.

    Returns:
        (logits float32 [N, keep, V], attention mask [N, T], hidden states: tuple of
        [N, T, d] per layer (embeddings first) or None), on the model's input device.
    """
    batch = pad(seqs, 0, side="left", device=input_device(model))  # pad id 0: masked out
    t = batch["input_ids"].shape[1]
    if not batchable(model, seqs):  # without position ids: the rows one by one
        parts = [forward_batch(model, [s], keep=keep, hidden=hidden) for s in seqs]
        return _stack_parts(parts, t)
    kwargs: dict[str, Any] = {**forward_inputs(model, batch), "use_cache": False}
    if hidden:
        kwargs["output_hidden_states"] = True
    with eval_mode(model):
        logits, out = logits_at(model, t - keep, t, **kwargs)
    hs = tuple(out.hidden_states) if hidden else None
    return logits[:, -keep:, :].float(), batch["attention_mask"], hs


def _stack_parts(parts: list, t: int) -> tuple[torch.Tensor, torch.Tensor, tuple | None]:
    def lpad(x: torch.Tensor) -> torch.Tensor:
        pad = t - x.shape[1]
        if pad == 0:
            return x
        shape = (x.shape[0], pad, *x.shape[2:])
        return torch.cat([torch.zeros(shape, dtype=x.dtype, device=x.device), x], dim=1)

    logits = torch.cat([p[0] for p in parts])
    mask = torch.cat([lpad(p[1]) for p in parts])
    hs = None
    if parts[0][2] is not None:
        hs = tuple(torch.cat([lpad(p[2][j]) for p in parts]) for j in range(len(parts[0][2])))
    return logits, mask, hs


def option_probs(
    model: Any,
    tokenizer: Any,
    prefixes: Sequence[str],
    options: Sequence[str],
    *,
    batch_size: int = 16,
) -> torch.Tensor:
    """Probability of each option as the continuation of each prefix, normalised over options.

    Each option is appended to the prefix and tokenized jointly; the options' token sequences
    share a common prefix and then differ at one token, the decision token: p(option) is the
    next-token probability of its decision token after the common prefix, renormalised over the
    options. One forward pass per prefix.

    Args:
        model, tokenizer: causal LM.
        prefixes: N prompt texts (no special tokens are added).
        options: the M option texts, e.g. (" (A", " (B").

    Returns:
        float64 [N, M], rows sum to 1.
    """
    seqs: list[list[int]] = []
    choice: list[list[int]] = []
    for prefix in prefixes:
        toks = [encode_prompt(tokenizer, prefix + o) for o in options]
        common = 0
        while all(len(x) > common for x in toks) and len({x[common] for x in toks}) == 1:
            common += 1
        heads = [x[common] if len(x) > common else None for x in toks]
        if common == 0 or None in heads or len(set(heads)) != len(heads):
            raise ValueError(f"options {list(options)!r} do not diverge at one token after "
                             f"the prompt {prefix[-40:]!r}")
        seqs.append(toks[0][:common])
        choice.append(heads)  # type: ignore[arg-type]
    out = []
    for i in range(0, len(seqs), batch_size):
        logits, _, _ = forward_batch(model, seqs[i:i + batch_size], keep=1)
        idx = torch.as_tensor(choice[i:i + batch_size], device=logits.device)
        sel = logits[:, -1, :].double().log_softmax(-1).gather(1, idx)
        out.append(sel.softmax(-1).cpu())
    return torch.cat(out)


def render(tokenizer: Any, user: str, assistant_prefix: str, plain_sep: str = "\n") -> str:
    """A prompt asking ``user`` and starting the reply with ``assistant_prefix``.

    With a chat template: one user message, the generation prompt, then the prefix. Without:
    ``user + plain_sep + assistant_prefix`` (BOS text first when the tokenizer adds BOS).
    """
    if has_chat_template(tokenizer):
        head = tokenizer.apply_chat_template([{"role": "user", "content": user}],
                                             tokenize=False, add_generation_prompt=True)
        return head + assistant_prefix
    return bos_text(tokenizer) + user + plain_sep + assistant_prefix
