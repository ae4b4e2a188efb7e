"""A sequence longer than a learned position table is refused before any work, naming it;
rotary positions run on past the trained length (nothing to refuse)."""

from __future__ import annotations

import pytest

from isograd.lm import score
from isograd.lm.batching import context_length, encode_pairs

from .tiny_lm import tiny_model, tiny_tokenizer


def long_prompt(tok, n_tokens):
    prompt = "word " * n_tokens
    while len(tok(prompt, add_special_tokens=False)["input_ids"]) < n_tokens:
        prompt += "word "
    return prompt


def test_gpt2_pair_past_its_positions_is_refused_before_any_work(monkeypatch):
    model, tok = tiny_model("gpt2"), tiny_tokenizer()
    assert context_length(model) == model.config.n_positions == 512
    prompt = long_prompt(tok, 520)
    (p, a), = encode_pairs(tok, [prompt], [" no"])
    calls = []
    monkeypatch.setattr(model, "forward", lambda *a, **k: calls.append(1))
    with pytest.raises(ValueError, match=rf"pair 1 \(prompt \+ answer\) is {len(p) + len(a)} "
                                         "tokens, longer than the model's context of 512"):
        score(model, tok, ["Why?", prompt], [" no", " no"], batch_size=1)
    assert calls == []  # not even the first pair's forward ran


def test_rotary_model_has_no_table_to_run_past():
    model, tok = tiny_model("llama"), tiny_tokenizer()
    assert context_length(model) is None
    s = score(model, tok, [long_prompt(tok, 530)], [" no"], batch_size=1)
    assert 0 < float(s.p[0]) < 1
