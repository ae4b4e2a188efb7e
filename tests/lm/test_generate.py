"""greedy_answers: a left-padded batch gives each prompt exactly its greedy_answer alone."""

from __future__ import annotations

import pytest
import torch

from isograd.lm.generate import greedy_answer, greedy_answers
from isograd.lm.prompts import qa_prompt

from .tiny_lm import tiny_model, tiny_tokenizer

QUESTIONS = ["Who?", "What is the capital city of France?", "2+2?",
             "Which river flows through Rome, and how long is it?", "Why?"]


def _stop_rule(model, tok):
    """Make "\n" the argmax at every 6th position: a tiny random model barely reads its
    prompt, so this makes rows of different prompt lengths stop at different steps. The rule
    reads each row's own position id, so it holds alone and in a padded batch alike."""
    nl = tok.convert_tokens_to_ids("\n")

    def hook(module, args, kwargs, out):
        hit = kwargs["position_ids"][:, -1] % 6 == 0
        out.logits[:, -1, nl] += 100.0 * hit.to(out.logits.dtype)
        return out

    return model.register_forward_hook(hook, with_kwargs=True)


# (GPT-2 and Qwen2 with the chat template stop at once: their first token is the EOS)
@pytest.mark.parametrize("kind, chat", [("llama", True), ("llama", False), ("gpt2", False),
                                        ("qwen2", False)])
def test_batch_equals_alone(kind, chat):
    tok = tiny_tokenizer(chat=chat)
    model = tiny_model(kind, seed=1, dtype=torch.float32)
    prompts = [qa_prompt(tok, q) for q in QUESTIONS]
    handle = _stop_rule(model, tok)
    try:
        alone = [greedy_answer(model, tok, p, max_new_tokens=10) for p in prompts]
        batched = greedy_answers(model, tok, prompts, max_new_tokens=10, batch_size=3)
    finally:
        handle.remove()
    lengths = {len(a.token_ids) for a in alone}
    assert len(lengths) > 1 and min(lengths) < 10  # rows stop at their own step
    assert len(batched) == len(prompts)
    for a, b in zip(alone, batched):
        assert b.token_ids == a.token_ids and b.text == a.text
        torch.testing.assert_close(torch.tensor(b.token_logprobs), torch.tensor(a.token_logprobs),
                                   rtol=0, atol=1e-5)


def test_order_and_batch_size_do_not_matter():
    tok = tiny_tokenizer()
    model = tiny_model("llama", seed=2)  # float64: identical up to rounding
    prompts = [qa_prompt(tok, q) for q in QUESTIONS]
    ref = greedy_answers(model, tok, prompts, max_new_tokens=6, batch_size=1)
    for bs in (2, 5, 8):
        out = greedy_answers(model, tok, prompts, max_new_tokens=6, batch_size=bs)
        assert [s.token_ids for s in out] == [s.token_ids for s in ref]
    rev = greedy_answers(model, tok, prompts[::-1], max_new_tokens=6, batch_size=5)
    assert [s.token_ids for s in rev[::-1]] == [s.token_ids for s in ref]


def test_mode_is_restored_and_bad_input():
    tok = tiny_tokenizer()
    model = tiny_model("llama").train()
    greedy_answers(model, tok, [qa_prompt(tok, "Who?")], max_new_tokens=2)
    assert model.training
    with pytest.raises(ValueError, match="batch_size"):
        greedy_answers(model, tok, ["a"], batch_size=0)
    with pytest.raises(ValueError, match="prompt 1"):
        greedy_answers(model, tok, ["a", ""])
    with pytest.raises(ValueError, match="max_new_tokens"):
        greedy_answers(model, tok, ["a"], max_new_tokens=0)
    assert greedy_answers(model, tok, []) == []
