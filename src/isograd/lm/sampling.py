"""Sampling K one-line answers from a causal LM, with their token log-probabilities.

The answers feed the sampling baselines (naive and semantic entropy): they are drawn once per
question and reused by every method (the pipeline passes them in ``QAContext.samples``).

Decoding rules (shared with the greedy answer of ``isograd.lm.generate``):
- plain ancestral sampling from ``softmax(logits / temperature)``: no top-k, top-p, repetition
  penalty or other processor from the model's ``generation_config`` (they would change the
  distribution the entropies are meant to measure); ``temperature=0`` is greedy (argmax);
- an answer is one line: it stops *before* the first token that is an end-of-sequence token or
  whose decoded text contains a newline, or after ``max_new_tokens`` tokens; the stop token is
  not part of the answer (neither its id nor its log-probability);
- ``token_logprobs`` are log-probabilities under the untempered (temperature 1) model
  distribution, whatever temperature was used to draw the tokens: they are the model's own
  probabilities of the answer, comparable between samples and with the greedy answer;
- ``text`` is the decoded answer tokens, stripped of surrounding whitespace.

Seeding: a private ``torch.Generator`` seeded with ``seed`` draws the tokens, so the global RNG
state is never read nor changed, and the same inputs give the same samples.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .batching import (
    batchable,
    cache_arg,
    encode_prompt,
    eval_mode,
    forward_inputs,
    input_device,
    logits_to_keep_arg,
    pad,
    pad_id,
)


@dataclass(frozen=True)
class Sample:
    """One generated answer.

    Attributes:
        text: the decoded answer, stripped.
        token_ids: the answer's token ids (stop token excluded), length L.
        token_logprobs: log p(token_t | prompt, tokens_<t) under the temperature-1 model, length L.
    """

    text: str
    token_ids: tuple[int, ...]
    token_logprobs: tuple[float, ...]

    @property
    def logprob(self) -> float:
        """log p(answer | prompt): the sum of the token log-probabilities (0 for an empty answer)."""
        return float(sum(self.token_logprobs))

    @property
    def mean_logprob(self) -> float:
        """Length-normalised log-probability (mean over tokens; 0 for an empty answer)."""
        n = len(self.token_logprobs)
        return self.logprob / n if n else 0.0


_STOP_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _eos_ids(tokenizer: Any, model: Any | None) -> set[int]:
    ids: set[int] = set()
    for src in (getattr(tokenizer, "eos_token_id", None),
                getattr(getattr(model, "generation_config", None), "eos_token_id", None),
                getattr(getattr(model, "config", None), "eos_token_id", None)):
        if src is None:
            continue
        ids.update([src] if isinstance(src, int) else list(src))
    return ids


def stop_mask(tokenizer: Any, vocab_size: int, model: Any | None = None) -> torch.Tensor:
    """Boolean mask [vocab_size] of the tokens that end a one-line answer.

    True for every end-of-sequence id (tokenizer's and model's) and every token whose decoded
    text contains a newline. Token ids beyond the tokenizer's vocabulary (padded embedding
    rows) are never stop tokens. The newline part is cached per tokenizer.
    """
    try:
        newline = _STOP_CACHE[tokenizer]
    except (KeyError, TypeError):
        n = len(tokenizer)
        texts = tokenizer.batch_decode([[i] for i in range(n)])
        newline = torch.tensor(["\n" in t for t in texts], dtype=torch.bool, device="cpu")
        with contextlib.suppress(TypeError):  # tokenizers that refuse weak references
            _STOP_CACHE[tokenizer] = newline
    mask = torch.zeros(vocab_size, dtype=torch.bool, device="cpu")
    m = min(vocab_size, newline.numel())
    mask[:m] = newline[:m]
    for i in _eos_ids(tokenizer, model):
        if 0 <= i < vocab_size:
            mask[i] = True
    return mask


@torch.no_grad()
def sample_answers(
    model: Any,
    tokenizer: Any,
    prompt: str,
    *,
    k: int = 10,
    temperature: float = 1.0,
    max_new_tokens: int = 32,
    seed: int = 0,
) -> list[Sample]:
    """Draw ``k`` one-line answers to ``prompt`` in one batch (see the module docstring).

    The K copies of the prompt run as one batch with a KV cache: the cost is about K forward
    passes over prompt + answer (counted as K forward-pass equivalents by the baselines).

    Args:
        model: a causal LM (Hugging Face ``...ForCausalLM``); left in its train/eval mode.
        tokenizer: its tokenizer.
        prompt: the full prompt text (chat template already applied), tokenized without
            special tokens.
        k: number of answers.
        temperature: sampling temperature; 0 means greedy (then all k answers are equal).
        max_new_tokens: cap on answer tokens.
        seed: seed of the private generator.

    Returns:
        k Samples, in draw order.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    ids = encode_prompt(tokenizer, prompt)
    if not ids:
        raise ValueError("the prompt tokenizes to no token; give a non-empty prompt")
    return decode(model, tokenizer, [ids] * k, temperature=temperature,
                  max_new_tokens=max_new_tokens, seed=seed)


@torch.no_grad()
def decode(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Sequence[int]],
    *,
    temperature: float | Sequence[float],
    max_new_tokens: int,
    seed: int | Sequence[int] = 0,
) -> list[Sample]:
    """One-line answers to B tokenized prompts, decoded as one left-padded batch.

    The decoding rules are the module docstring's. Left padding with explicit position ids
    and attention mask makes each row's logits those of the row alone (up to float rounding),
    and every row's next token sits at the last position, so one KV-cache step serves all.
    A model whose ``forward`` takes no ``position_ids`` decodes unequal prompts one by one.

    Args:
        model, tokenizer: the causal LM.
        prompts: B non-empty token-id sequences (e.g. `encode_prompt`).
        temperature: 0 = greedy (argmax), else sampling from ``softmax(logits / temperature)``;
            or one temperature per row.
        max_new_tokens: cap on answer tokens.
        seed: seed of the private generator the rows draw from in turn (used only when
            temperature > 0). Per-row options (a sequence of temperatures or of seeds) give
            each row its own generator: every row then draws what it draws alone (up to float
            rounding of its logits), whatever it is batched with.

    Returns:
        B Samples, in prompt order.
    """
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    per_row = not (isinstance(temperature, (int, float)) and isinstance(seed, int))
    temps = _rows(temperature, len(prompts), "temperature")
    seeds = _rows(seed, len(prompts), "seed")
    if not batchable(model, prompts):
        return [s for i, p in enumerate(prompts)
                for s in decode(model, tokenizer, [p], temperature=temps[i] if per_row
                                else temperature, max_new_tokens=max_new_tokens,
                                seed=seeds[i] if per_row else seed)]
    device = input_device(model)
    batch = pad(prompts, pad_id(tokenizer), side="left", device=device)
    step = forward_inputs(model, batch)  # position ids only where the forward takes them
    b = batch["input_ids"].shape[0]
    tokens: list[torch.Tensor] = []
    logps: list[torch.Tensor] = []
    # the stop mask, the generator and the finished flags live where the logits come out (the
    # last device of a model split with device_map); the next input goes back to `device`
    stop = done = None
    past = None
    cache_kw, keep = cache_arg(model), logits_to_keep_arg(model)
    extra = {keep: 1} if keep else {}
    with eval_mode(model):
        for _ in range(max_new_tokens):
            out = model(**step, use_cache=True, **{cache_kw: past}, **extra)
            past = out.get("cache", None) or out.get("past_key_values", None)
            logits = out.logits[:, -1, :].float()
            if stop is None:
                stop = stop_mask(tokenizer, logits.shape[-1], model).to(logits.device)
                done = torch.zeros(b, dtype=torch.bool, device=logits.device)
                gens = [torch.Generator(device=logits.device).manual_seed(int(x))
                        for x in (seeds if per_row else [seed])]
            logp = torch.log_softmax(logits, dim=-1)
            if not per_row:
                tok = (logits.argmax(dim=-1) if temperature == 0 else torch.multinomial(
                    torch.softmax(logits / temperature, dim=-1), 1, generator=gens[0]).squeeze(1))
            else:  # each sampled row from its own generator, as it would draw alone
                tok = logits.argmax(dim=-1)
                for i, t in enumerate(temps):
                    if t > 0:
                        probs = torch.softmax(logits[i:i + 1] / t, dim=-1)
                        tok[i] = torch.multinomial(probs, 1, generator=gens[i])[0, 0]
            # a finished row keeps being fed (no ragged batch); its tokens are masked out below
            tokens.append(torch.where(done, -1, tok))
            logps.append(logp.gather(1, tok[:, None]).squeeze(1))
            done = done | stop[tok]
            if bool(done.all()):
                break
            step["input_ids"] = tok[:, None].to(device)
            step["attention_mask"] = torch.cat(
                [step["attention_mask"], step["attention_mask"].new_ones(b, 1)], dim=1)
            if "position_ids" in step:
                step["position_ids"] = step["position_ids"][:, -1:] + 1
    ids = torch.stack(tokens, 1).cpu().tolist()
    lps = torch.stack(logps, 1).double().cpu().tolist()
    stop_cpu = stop.cpu()
    return [_to_sample(tokenizer, ids[i], lps[i], stop_cpu) for i in range(b)]


def _rows(value: Any, b: int, name: str) -> list[Any]:
    """A per-row option: a scalar for every row, or a sequence of exactly B values."""
    if isinstance(value, (int, float)):
        return [value] * b
    values = list(value)
    if len(values) != b:
        raise ValueError(f"{len(values)} values of {name} for {b} prompts")
    return values


def _to_sample(tokenizer: Any, ids: list[int], lps: list[float], stop: torch.Tensor) -> Sample:
    keep_ids: list[int] = []
    keep_lps: list[float] = []
    for t, lp in zip(ids, lps):
        if t < 0 or bool(stop[t]):
            break
        keep_ids.append(t)
        keep_lps.append(lp)
    text = tokenizer.decode(keep_ids, skip_special_tokens=True).strip() if keep_ids else ""
    return Sample(text=text, token_ids=tuple(keep_ids), token_logprobs=tuple(keep_lps))
