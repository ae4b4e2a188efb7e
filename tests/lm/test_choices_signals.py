"""score_choices records the generated-answer path's signals: ‖∇θ log p‖², the input-embedding
gradient and the per-block vector, against brute force on tiny float64 models."""

from __future__ import annotations

import pytest
import torch

from isograd.lm.batching import encode_answer, encode_prompt
from isograd.lm.choices import score_choices
from isograd.lm.prompts import qa_prompt
from isograd.lm.score import score
from isograd.lm.signals import layer_group

from .tiny_lm import tiny_model, tiny_tokenizer

PROMPTS = ["What is two plus two?", "Who wrote Hamlet?", "Name a colour."]
OPTIONS = [["four", "five", "twenty two"], ["me", "Shakespeare"], ["red", "blue", "a", "b"]]


def brute(model, tok, prompt, options):
    """log p of the pick, ‖∇θ log p‖² per parameter group, and ‖∂ log p / ∂e‖² with the
    prompt's embeddings one leaf shared by every option (each option's tokens their own)."""
    emb = model.get_input_embeddings()
    p_ids = encode_prompt(tok, prompt)
    e_p = emb(torch.tensor(p_ids)).detach().requires_grad_(True)
    leaves, lls = [], []
    for o in options:
        o_ids = encode_answer(tok, prompt, o)
        e_o = emb(torch.tensor(o_ids)).detach().requires_grad_(True)
        leaves.append(e_o)
        # the embedding module's output, rebuilt from leaves (same values, separate inputs)
        out = model(inputs_embeds=torch.cat([e_p, e_o])[None]).logits[0].log_softmax(-1)
        n = len(p_ids)
        lls.append(out[n - 1:-1].gather(1, torch.tensor(o_ids)[:, None]).sum())
    ll = torch.stack(lls)
    k = int(ll.argmax())
    lp = ll.log_softmax(0)[k]
    ge = torch.autograd.grad(lp, [e_p, *leaves], retain_graph=True)
    emb_sq = float(sum(g.square().sum() for g in ge))
    # parameter gradients need the embedding lookup inside the graph: rerun from token ids
    named = dict(model.named_parameters())
    lls = []
    for o in options:
        o_ids = encode_answer(tok, prompt, o)
        ids = torch.tensor([p_ids + o_ids])
        out = model(input_ids=ids).logits[0].log_softmax(-1)
        n = len(p_ids)
        lls.append(out[n - 1:-1].gather(1, ids[0, n:, None]).sum())
    lp2 = torch.stack(lls).log_softmax(0)[k]
    grads = torch.autograd.grad(lp2, list(named.values()))
    groups: dict[str, float] = {}
    for name, g in zip(named, grads):
        groups[layer_group(name)] = groups.get(layer_group(name), 0.0) + float(g.square().sum())
    return k, float(lp.detach()), groups, emb_sq, len(encode_answer(tok, prompt, options[k]))


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
@pytest.mark.parametrize("packed", [True, False])
def test_choice_signals_match_brute_force(kind, packed):
    model, tok = tiny_model(kind), tiny_tokenizer()
    prompts = [qa_prompt(tok, q) for q in PROMPTS]
    s = score_choices(model, tok, prompts, OPTIONS, batch_size=2, packed=packed)
    for i, (pr, opts) in enumerate(zip(prompts, OPTIONS)):
        k, lp, groups, emb_sq, n_tok = brute(model, tok, pr, opts)
        assert int(s.pick[i]) == k and int(s.n_tokens[i]) == n_tok
        assert float(s.log_p[i]) == pytest.approx(lp, rel=1e-9)
        assert float(s.grad_log_p[i]) == pytest.approx(sum(groups.values()), rel=1e-7)
        assert float(s.embedding_grad[i]) == pytest.approx(emb_sq, rel=1e-7)
        p2 = float(s.p[i]) ** 2
        assert set(s.by_layer) == set(groups)
        for g, v in groups.items():
            assert float(s.by_layer[g][i]) == pytest.approx(p2 * v, rel=1e-7, abs=1e-300)


def test_choice_row_has_the_generated_path_fields():
    model, tok = tiny_model("llama"), tiny_tokenizer()
    prompts = [qa_prompt(tok, q) for q in PROMPTS]
    s = score_choices(model, tok, prompts, OPTIONS)
    gen = score(model, tok, prompts[:1], ["four"]).row(0)
    row = s.row(0)
    for f in ("p", "log_p", "grad_log_p", "epistemic", "aleatoric", "total", "embedding_grad",
              "n_tokens"):
        assert isinstance(row[f], type(gen[f])), f
    assert set(row["by_layer"]) == set(gen["by_layer"])
    assert "pick" not in row
    assert score_choices(model, tok, prompts, OPTIONS, by_layer=False).by_layer is None
