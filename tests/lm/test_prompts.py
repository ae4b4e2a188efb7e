"""qa_prompt / mc_prompt text, answer tokenization, and the greedy answer."""

from __future__ import annotations

import pytest
import torch

from isograd.lm.batching import encode_answer, encode_prompt
from isograd.lm.generate import greedy_answer
from isograd.lm.prompts import (
    BASE_EXAMPLES,
    EXAMPLES,
    INSTRUCTION,
    base_prompt,
    mc_prompt,
    qa_prompt,
)

from .tiny_lm import tiny_model, tiny_tokenizer


def test_chat_prompt_uses_template():
    tok = tiny_tokenizer(chat=True)
    p = qa_prompt(tok, "  Who wrote Hamlet?\n")
    assert p == (f"<s>user\n{INSTRUCTION}\nQuestion: Who wrote Hamlet?</s>\n<s>assistant\n")
    assert mc_prompt(tok, "Who wrote Hamlet?") == p
    ids = encode_prompt(tok, p)
    assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 2  # specials parsed


def test_plain_prompt_without_template():
    tok = tiny_tokenizer(chat=False)
    p = qa_prompt(tok, "Why?")
    assert p == f"{INSTRUCTION}\nQuestion: Why?\nAnswer:"


def test_plain_style_is_the_question_alone():
    assert qa_prompt(tiny_tokenizer(chat=False), "Why?", "plain") == "Question: Why?\nAnswer:"
    chat = qa_prompt(tiny_tokenizer(chat=True), "Why?", style="plain")
    assert chat == "<s>user\nQuestion: Why?</s>\n<s>assistant\n"


def test_fewshot_style_puts_the_examples_first():
    text = qa_prompt(tiny_tokenizer(chat=False), "Why?", "fewshot")
    blocks = [f"{INSTRUCTION}\nQuestion: {q}\nAnswer: {a}\n\n" for q, a in EXAMPLES]
    assert text == "".join(blocks) + f"{INSTRUCTION}\nQuestion: Why?\nAnswer:"
    chat = qa_prompt(tiny_tokenizer(chat=True), "Why?", "fewshot")
    turns = [f"<s>user\n{INSTRUCTION}\nQuestion: {q}</s>\n<s>assistant\n{a}</s>\n" for q, a in EXAMPLES]
    assert chat == "".join(turns) + f"<s>user\n{INSTRUCTION}\nQuestion: Why?</s>\n<s>assistant\n"
    assert mc_prompt(tiny_tokenizer(chat=True), "Why?", "fewshot") == chat


def test_base_style_is_qa_text_even_with_a_chat_template():
    want = "".join(f"Q: {q}\nA: {a}\n\n" for q, a in BASE_EXAMPLES) + "Q: Why?\nA:"
    for chat in (False, True):  # never the chat template: one prompt for both kinds of model
        assert qa_prompt(tiny_tokenizer(chat=chat), " Why?\n", "base") == want
    assert mc_prompt(tiny_tokenizer(chat=True), "Why?", "base") == want
    assert base_prompt(tiny_tokenizer(chat=False), "Why?", [("A?", "b")]) == "Q: A?\nA: b\n\nQ: Why?\nA:"
    # the shots are distinct answers (none repeated, so none is the obvious one to copy)
    assert len({a for _, a in BASE_EXAMPLES}) == len(BASE_EXAMPLES) >= 5


def test_unknown_style_lists_the_allowed_ones():
    with pytest.raises(ValueError, match="unknown prompt style 'terse'; allowed: 'short', 'plain', 'fewshot'"):
        qa_prompt(tiny_tokenizer(chat=False), "Why?", "terse")


def test_plain_prompt_adds_bos_when_tokenizer_would():
    from tokenizers.processors import TemplateProcessing

    tok = tiny_tokenizer(chat=False)
    tok._tokenizer.post_processor = TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", tok.bos_token_id)]
    )
    p = qa_prompt(tok, "Why?")
    assert p.startswith("<s>" + INSTRUCTION)
    assert encode_prompt(tok, p).count(tok.bos_token_id) == 1  # not twice
    assert qa_prompt(tok, "Why?", "base").startswith("<s>Q: " + BASE_EXAMPLES[0][0])


def test_encode_answer_is_the_continuation():
    tok = tiny_tokenizer(chat=False)
    p = qa_prompt(tok, "Why?")
    a = encode_answer(tok, p, " because")
    assert encode_prompt(tok, p) + a == encode_prompt(tok, p + " because")
    assert tok.decode(a) == " because"


def _greedy_reference(model, tok, prompt, max_new):
    ids = encode_prompt(tok, prompt)
    out, lps = [], []
    for _ in range(max_new):
        logp = model(input_ids=torch.tensor([ids + out])).logits[0, -1].log_softmax(-1)
        t = int(logp.argmax())
        if t == tok.eos_token_id or "\n" in tok.decode([t]):
            break
        out.append(t)
        lps.append(float(logp[t].detach()))
    return out, lps


def test_greedy_answer_matches_argmax_loop():
    tok = tiny_tokenizer(chat=True)
    for seed in range(3):
        model = tiny_model("llama", seed=seed)
        prompt = qa_prompt(tok, "Who?")
        s = greedy_answer(model, tok, prompt, max_new_tokens=12)
        ref_ids, ref_lps = _greedy_reference(model, tok, prompt, 12)
        assert list(s.token_ids) == ref_ids
        torch.testing.assert_close(torch.tensor(s.token_logprobs, dtype=torch.float64),
                                   torch.tensor(ref_lps, dtype=torch.float64))
        assert s.text == tok.decode(ref_ids, skip_special_tokens=True).strip()
        assert len(s.token_ids) <= 12


def test_greedy_answer_stops_before_newline():
    tok = tiny_tokenizer(chat=True)
    model = tiny_model("llama")
    nl = tok.convert_tokens_to_ids("\n")
    prompt = qa_prompt(tok, "Who?")
    first = greedy_answer(model, tok, prompt, max_new_tokens=3)
    assert len(first.token_ids) == 3  # this random model does not stop on its own
    boost = torch.zeros(model.config.vocab_size, dtype=torch.float64)
    boost[nl] = 100.0  # "\n" becomes the argmax everywhere: the answer stops at once
    handle = model.lm_head.register_forward_hook(lambda m, i, o: o + boost)
    try:
        s = greedy_answer(model, tok, prompt, max_new_tokens=30)
    finally:
        handle.remove()
    assert s.token_ids == () and s.text == "" and s.token_logprobs == ()
