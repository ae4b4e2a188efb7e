"""Token plumbing shared by every LM caller: encoding, padding, position ids, devices, signatures.

One place for what `score`, `score_choices`, sampling, generation and the baselines all need:

* **encoding**: prompts made by `isograd.lm.prompts` already carry their special tokens, so
  they are tokenized with ``add_special_tokens=False`` (`encode_prompt`); an answer is the
  continuation of its prompt (`encode_answer`).
* **padding**: `pad` builds ``input_ids``/``attention_mask``/``position_ids`` [B, T], left or
  right; position ids count real tokens only, so every row sees exactly what it would see alone.
  `forward_inputs` is the one way a batch goes into a model: it passes ``position_ids`` where
  ``forward`` takes them and otherwise refuses a batch that needs them; `batchable` says
  whether sequences may share a left-padded batch at all.
* **devices**: every tensor is created on `input_device(model)`, the device of the model's
  input embedding (the first device of a model split with ``device_map``), never on torch's
  default device; results meant for the host go through ``.cpu()`` explicitly.
* **signatures**: `forward_names` reads ``model.forward``'s parameters once per model class;
  `logits_at` asks only for the logits it needs (``logits_to_keep`` / ``num_logits_to_keep``)
  when the model accepts it, and slices otherwise; `cache_arg` names the KV-cache argument.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Iterator, Sequence
from typing import Any

import torch

Answer = str | Sequence[int]


# ----------------------------------------------------------------------------- devices


def input_device(model: Any) -> torch.device:
    """Device of the model's input embedding (where input ids must go), else of its first parameter."""
    get = getattr(model, "get_input_embeddings", None)
    emb = None
    if callable(get):
        with contextlib.suppress(NotImplementedError, AttributeError):
            emb = get()
    weight = getattr(emb, "weight", None)
    if isinstance(weight, torch.Tensor):
        return weight.device
    return next(model.parameters()).device


@contextlib.contextmanager
def eval_mode(model: Any) -> Iterator[None]:
    """Put ``model`` in eval mode for the block and restore its train flag afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


# ----------------------------------------------------------------------------- encoding


def pad_id(tokenizer: Any) -> int:
    """The id used for padding: the tokenizer's pad token, else its EOS, else 0.

    Padded positions are masked out, so the value never changes a result.
    """
    for attr in ("pad_token_id", "eos_token_id"):
        v = getattr(tokenizer, attr, None)
        if isinstance(v, int):
            return v
    return 0


def encode_prompt(tokenizer: Any, prompt: str) -> list[int]:
    """Token ids of a prompt made by `isograd.lm.prompts` (no special tokens added)."""
    return list(tokenizer(prompt, add_special_tokens=False)["input_ids"])


def encode_answer(tokenizer: Any, prompt: str, answer: str) -> list[int]:
    """Token ids of `answer` as a continuation of `prompt`.

    The answer text is appended to the prompt verbatim (add a leading space yourself if your
    prompt needs one). Ids come from tokenizing prompt + answer together and dropping the
    prompt's ids, so merges across the boundary match what the model would see; when the
    joint tokenization does not start with the prompt's ids, the answer is tokenized alone.
    """
    p = encode_prompt(tokenizer, prompt)
    joint = encode_prompt(tokenizer, prompt + answer)
    if joint[: len(p)] == p and len(joint) > len(p):
        return joint[len(p):]
    return encode_prompt(tokenizer, answer)


def encode_pairs(
    tokenizer: Any, prompts: Sequence[str], answers: Sequence[Answer]
) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, answer ids) per pair; an answer is a text or its token ids.

    Raises:
        ValueError: different lengths, or a prompt or answer without tokens (names the pair).
    """
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


CONTEXT_ATTRS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")
"""Where a model's config states its context (the first present wins; GPT-2: n_positions)."""


POSITION_TABLES = ("wpe", "pos")
"""Name parts of a learned position table (GPT-2's ``wpe``, OPT's ``embed_positions``)."""


def context_length(model: Any) -> int | None:
    """The most positions `model` can take: its config's context when it has a learned
    position table (no row beyond it: GPT-2, OPT); None otherwise (rotary or ALiBi positions
    run on, exactly, past the trained length)."""
    cfg = getattr(model, "config", None)
    limit = next((v for v in (getattr(cfg, a, None) for a in CONTEXT_ATTRS)
                  if isinstance(v, int) and not isinstance(v, bool) and v > 0), None)
    learned = limit is not None and any(
        isinstance(m, torch.nn.Embedding) and any(k in name.rsplit(".", 1)[-1]
                                                  for k in POSITION_TABLES)
        for name, m in model.named_modules())
    return limit if learned else None


def check_context(model: Any, lengths: Sequence[int], names: Sequence[str], *,
                  extra: int = 0) -> None:
    """Refuse, before any work, a sequence longer than the model's context (beyond it a learned
    position table has no row: GPT-2 fails with an IndexError after earlier batches ran).

    Args:
        model: the causal LM. lengths: tokens per sequence. names: how the error names each.
        extra: tokens each sequence will still grow by (e.g. ``max_new_tokens``).

    Raises:
        ValueError: the first sequence too long, named, with its length and the context.
    """
    limit = context_length(model)
    if limit is None:
        return
    for name, n in zip(names, lengths):
        if n + extra > limit:
            grow = f" (+ {extra} new)" if extra else ""
            raise ValueError(f"{name} is {n}{grow} tokens, longer than the model's context of "
                             f"{limit} positions; shorten it or leave it out")


# ----------------------------------------------------------------------------- padding


def position_ids(mask: torch.Tensor) -> torch.Tensor:
    """Position ids [B, T] counting the real tokens of each row (padding gets 0)."""
    return (mask.cumsum(1) - 1).clamp(min=0)


def pad(
    seqs: Sequence[Sequence[int]], pad_token: int, *, side: str = "right",
    device: torch.device | str = "cpu",
) -> dict[str, torch.Tensor]:
    """Padded ``input_ids``, ``attention_mask`` and ``position_ids``, each int64 [B, T].

    Args:
        seqs: B non-empty token-id sequences.
        pad_token: id written at padded positions (masked out).
        side: "right" or "left" (left: every row ends at the last position, as generation needs).
        device: where the tensors are created.

    Raises:
        ValueError: an empty sequence, no sequence, or an unknown side.
    """
    if side not in ("left", "right"):
        raise ValueError(f"padding side must be 'left' or 'right', got {side!r}")
    if not seqs:
        raise ValueError("no token sequence to pad")
    if any(len(s) == 0 for s in seqs):
        raise ValueError("empty token sequence")
    width = max(len(s) for s in seqs)
    rows = [list(s) for s in seqs]
    flat = [[pad_token] * (width - len(r)) + r if side == "left" else r + [pad_token] * (width - len(r))
            for r in rows]
    marks = [[0] * (width - len(r)) + [1] * len(r) if side == "left" else [1] * len(r) + [0] * (width - len(r))
             for r in rows]
    ids = torch.tensor(flat, dtype=torch.long, device=device)
    mask = torch.tensor(marks, dtype=torch.long, device=device)
    return {"input_ids": ids, "attention_mask": mask, "position_ids": position_ids(mask)}


def pair_batch(
    pairs: Sequence[tuple[Sequence[int], Sequence[int]]], pad_token: int, *,
    side: str = "right", device: torch.device | str = "cpu",
) -> dict[str, torch.Tensor]:
    """`pad` of prompt + answer per pair, plus ``answer_mask`` bool [B, T] (True on answer tokens)."""
    batch = pad([list(p) + list(a) for p, a in pairs], pad_token, side=side, device=device)
    width = batch["input_ids"].shape[1]
    cols = torch.arange(width, device=device)
    lengths = torch.tensor([len(p) + len(a) for p, a in pairs], device=device)
    prompt = torch.tensor([len(p) for p, _ in pairs], device=device)
    left = side == "left"
    start = (width - lengths if left else torch.zeros_like(lengths)) + prompt
    end = torch.full_like(lengths, width) if left else lengths
    batch["answer_mask"] = (cols[None] >= start[:, None]) & (cols[None] < end[:, None])
    return batch


# ----------------------------------------------------------------------------- signatures


@functools.lru_cache(maxsize=64)
def _names_of(forward: Any) -> frozenset[str]:
    try:
        return frozenset(inspect.signature(forward).parameters)
    except (TypeError, ValueError):
        return frozenset()


def forward_names(model: Any) -> frozenset[str]:
    """Names of the parameters ``model.forward`` accepts (empty when it cannot be inspected)."""
    forward = getattr(type(model), "forward", None)
    if forward is None or getattr(model, "forward", None) is None:
        return frozenset()
    if "forward" in vars(model):  # an instance-level override (e.g. a wrapper): not cacheable
        return _names_of.__wrapped__(model.forward)
    return _names_of(forward)


def accepts(model: Any, name: str) -> bool:
    """Does ``model.forward`` take the argument `name`?"""
    return name in forward_names(model)


def batchable(model: Any, seqs: Sequence[Sequence[int]]) -> bool:
    """May `seqs` share one left-padded batch? Yes when ``model.forward`` takes position ids
    (`pad` sets them, so each row sees what it would alone) or when no row is padded."""
    return accepts(model, "position_ids") or len({len(s) for s in seqs}) <= 1


def forward_inputs(model: Any, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``input_ids``, ``attention_mask`` and, when ``model.forward`` takes them, ``position_ids``
    of a batch (`pad`, `pair_batch` or a packed batch), as keyword arguments of the forward.

    A model without position ids numbers the columns 0..T-1, which is right only where every
    real token's position id is its column (no left padding, no packed sequences).

    Raises:
        ValueError: the model takes no position ids and the batch needs them.
    """
    kw = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    pos = batch["position_ids"]
    if accepts(model, "position_ids"):
        kw["position_ids"] = pos
        return kw
    mask = batch["attention_mask"]
    real = mask.bool() if mask.dim() == 2 else torch.ones_like(pos, dtype=torch.bool)
    if bool((pos != torch.arange(pos.shape[-1], device=pos.device))[real].any()):
        raise ValueError(f"{type(model).__name__}.forward takes no position_ids, and this batch "
                         "needs them (left padding or packed sequences): pad on the right, or "
                         "put sequences of one length together")
    return kw


def cache_arg(model: Any) -> str:
    """Name of the KV-cache argument: ``cache`` (transformers 5) or ``past_key_values``."""
    return "cache" if accepts(model, "cache") else "past_key_values"


def logits_to_keep_arg(model: Any) -> str | None:
    """``logits_to_keep`` or ``num_logits_to_keep`` (some 4.x releases), or None if neither."""
    for opt in ("logits_to_keep", "num_logits_to_keep"):
        if accepts(model, opt):
            return opt
    return None


def logits_at(model: Any, lo: int, hi: int, **inputs: Any) -> tuple[torch.Tensor, Any]:
    """Logits [B, hi - lo, V] of positions ``lo .. hi-1`` and the model's full output.

    Only those positions' logits are computed when the model accepts ``logits_to_keep`` (an
    int for a trailing span, an index tensor otherwise); else all are computed and sliced.
    ``inputs`` go to the model as keyword arguments (they must include ``input_ids``).
    """
    width = inputs["input_ids"].shape[1]
    opt = logits_to_keep_arg(model)
    if opt is not None and hi == width:
        out = model(**inputs, **{opt: width - lo})
        return out.logits, out
    if opt == "logits_to_keep":
        out = model(**inputs, logits_to_keep=torch.arange(lo, hi, device=inputs["input_ids"].device))
        return out.logits, out
    out = model(**inputs)
    return out.logits[:, lo:hi], out


def to_device(batch: dict[str, torch.Tensor], device: torch.device | str) -> dict[str, torch.Tensor]:
    """The same batch with every tensor moved to `device` (no copy when already there)."""
    return {k: v.to(device) for k, v in batch.items()}
