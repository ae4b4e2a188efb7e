"""sample_answers: seeding, untouched global RNG, stop rule, log-probabilities by hand."""

from __future__ import annotations

import pytest
import torch

from isograd.lm.sampling import Sample, sample_answers, stop_mask

PROMPT = "<s>user\nWhat is 2+2?</s>\n<s>assistant\n"


def test_same_seed_same_samples_and_global_rng_untouched(model, tok):
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = sample_answers(model, tok, PROMPT, k=6, max_new_tokens=12, seed=7)
    assert torch.equal(state, torch.get_rng_state())
    b = sample_answers(model, tok, PROMPT, k=6, max_new_tokens=12, seed=7)
    c = sample_answers(model, tok, PROMPT, k=6, max_new_tokens=12, seed=8)
    assert a == b
    assert [s.token_ids for s in a] != [s.token_ids for s in c]
    assert len({s.token_ids for s in a}) > 1  # a random model at T=1 does not repeat itself
    assert all(isinstance(s, Sample) for s in a)


def test_logprobs_are_untempered_model_logprobs(model, tok):
    prompt_ids = tok(PROMPT, add_special_tokens=False).input_ids
    for temperature in (1.0, 0.5):
        for s in sample_answers(model, tok, PROMPT, k=3, temperature=temperature,
                                max_new_tokens=10, seed=1):
            assert len(s.token_ids) == len(s.token_logprobs) <= 10
            if not s.token_ids:
                continue
            ids = torch.tensor([prompt_ids + list(s.token_ids)])
            with torch.no_grad():
                logp = model(ids).logits[0].double().log_softmax(-1)
            pos = torch.arange(len(prompt_ids) - 1, ids.shape[1] - 1)
            ref = logp[pos, torch.tensor(s.token_ids)]
            torch.testing.assert_close(torch.tensor(s.token_logprobs, dtype=torch.float64), ref,
                                       rtol=1e-6, atol=1e-6)
            assert s.text == tok.decode(list(s.token_ids), skip_special_tokens=True).strip()
            assert s.logprob == pytest.approx(float(ref.sum()))
            assert s.mean_logprob == pytest.approx(float(ref.mean()))


def test_greedy_matches_argmax_loop(model, tok):
    out = sample_answers(model, tok, PROMPT, k=3, temperature=0, max_new_tokens=6)
    assert out[0] == out[1] == out[2]
    ids = tok(PROMPT, add_special_tokens=False, return_tensors="pt").input_ids
    stop = stop_mask(tok, model.config.vocab_size, model)
    ref = []
    with torch.no_grad():
        for _ in range(6):
            nxt = int(model(ids).logits[0, -1].argmax())
            if stop[nxt]:
                break
            ref.append(nxt)
            ids = torch.cat([ids, torch.tensor([[nxt]])], dim=1)
    assert list(out[0].token_ids) == ref


def test_stop_rule(model, tok):
    stop = stop_mask(tok, model.config.vocab_size, model)
    nl = tok.convert_tokens_to_ids("\n")
    assert stop[nl] and stop[tok.eos_token_id] and not stop[tok.convert_tokens_to_ids("a")]
    for s in sample_answers(model, tok, PROMPT, k=8, max_new_tokens=40, seed=3):
        assert not any(stop[t] for t in s.token_ids)
        assert "\n" not in s.text and s.text == s.text.strip()
    # every token made an end-of-sequence token: every answer is empty
    gc = model.generation_config
    old = gc.eos_token_id
    gc.eos_token_id = list(range(model.config.vocab_size))
    try:
        empty = sample_answers(model, tok, PROMPT, k=2, seed=0)
    finally:
        gc.eos_token_id = old
    assert all(s == Sample("", (), ()) for s in empty)
    assert empty[0].mean_logprob == 0.0


def test_train_flag_restored_and_bad_args(model, tok):
    model.train()
    try:
        sample_answers(model, tok, PROMPT, k=1, max_new_tokens=2)
        assert model.training
    finally:
        model.eval()
    with pytest.raises(ValueError, match="k must be"):
        sample_answers(model, tok, PROMPT, k=0)
    with pytest.raises(ValueError, match="temperature"):
        sample_answers(model, tok, PROMPT, temperature=-1)
    with pytest.raises(ValueError, match="no token"):
        sample_answers(model, tok, "", k=1)


def test_per_row_temperatures_and_seeds_draw_what_each_row_draws_alone(model, tok):
    from isograd.lm.sampling import decode

    prompts = [tok(p, add_special_tokens=False).input_ids
               for p in (PROMPT, "<s>user\nName a colour.</s>\n<s>assistant\n", "Once")]
    temps, seeds = [1.0, 0.0, 1.5], [11, 0, 12]
    together = decode(model, tok, prompts, temperature=temps, seed=seeds, max_new_tokens=10)
    alone = [decode(model, tok, [p], temperature=t, seed=s, max_new_tokens=10)[0]
             for p, t, s in zip(prompts, temps, seeds)]
    assert [s.token_ids for s in together] == [s.token_ids for s in alone]
    for a, b in zip(together, alone):
        torch.testing.assert_close(torch.tensor(a.token_logprobs, dtype=torch.float64),
                                   torch.tensor(b.token_logprobs, dtype=torch.float64))
    # a row's draws depend on its own seed only: swap the other rows' seeds, row 0 is unchanged
    other = decode(model, tok, prompts, temperature=temps, seed=[11, 5, 99], max_new_tokens=10)
    assert other[0].token_ids == together[0].token_ids
    assert other[2].token_ids != together[2].token_ids or len(together[2].token_ids) == 0
    with pytest.raises(ValueError, match="2 values of seed for 3 prompts"):
        decode(model, tok, prompts, temperature=1.0, seed=[1, 2], max_new_tokens=2)
