"""The extra signals of lm.score (grad_log_p, last layers, embedding gradient, by-layer vector)
against brute force: one pair at a time, unpadded, direct autograd, float64."""

from __future__ import annotations

import copy

import pytest
import torch

from isograd.layer_scale import layer_variances
from isograd.lm.prompts import encode_answer, encode_prompt, qa_prompt
from isograd.lm.score import score
from isograd.lm.signals import LAST_LAYERS, last_blocks, layer_group, n_blocks

from ..problems import rel_err
from .tiny_lm import tiny_model, tiny_tokenizer

QUESTIONS = ["What is two plus two?", "Who wrote Hamlet?", "Name a colour.", "Why?"]
ANSWERS = ["four", "William Shakespeare wrote it.", "red", "x"]


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer(chat=True)


def _pair_log_p(model, ids, n_prompt, embeds=None):
    """Geometric log p of the answer tokens ids[n_prompt:], from an unpadded forward."""
    out = model(input_ids=ids) if embeds is None else model(inputs_embeds=embeds)
    logp = out.logits[0].log_softmax(-1)
    return logp[n_prompt - 1:-1].gather(1, ids[0, n_prompt:, None])[:, 0].mean()


def brute(model, tok, prompts, answers):
    """Per pair: ‖∇ log p‖² per parameter name and ‖∂ log p / ∂ embeddings‖², plus log p."""
    named = dict(model.named_parameters())  # deduplicated: a tied weight counts once
    out = []
    for prompt, ans in zip(prompts, answers):
        p_ids = encode_prompt(tok, prompt)
        ids = torch.tensor([p_ids + encode_answer(tok, prompt, ans)])
        emb = model.get_input_embeddings()(ids).detach().requires_grad_(True)
        lp = _pair_log_p(model, ids, len(p_ids))
        grads = torch.autograd.grad(lp, list(named.values()))
        per = {n: float(g.double().square().sum()) for n, g in zip(named, grads)}
        (g_emb,) = torch.autograd.grad(_pair_log_p(model, ids, len(p_ids), emb), [emb])
        out.append((float(lp.detach()), per, float(g_emb.double().square().sum())))
    return out


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
@pytest.mark.parametrize("method", ["loop", "auto"])
def test_signals_match_brute_force(kind, method, tok):
    model = tiny_model(kind)
    prompts = [qa_prompt(tok, q) for q in QUESTIONS]
    ref = brute(model, tok, prompts, ANSWERS)
    sigma2 = 0.3
    n = n_blocks(model)
    assert n == 2
    for side in ("right", "left"):
        for k in (1, LAST_LAYERS):
            s = score(model, tok, prompts, ANSWERS, method=method, batch_size=3,
                      padding_side=side, last_layers=k, sigma2=sigma2)
            lp = torch.tensor([r[0] for r in ref], dtype=torch.float64)
            p2 = sigma2 * torch.exp(2 * lp)
            total = torch.tensor([sum(r[1].values()) for r in ref], dtype=torch.float64)
            assert rel_err(s.grad_log_p, total) <= 1e-8
            assert s.sq_grad_norm_log_p is s.grad_log_p
            keep = {f"block.{i}" for i in range(max(0, n - k), n)}
            last = torch.tensor([sum(v for nm, v in r[1].items() if layer_group(nm) in keep)
                                 for r in ref], dtype=torch.float64)
            assert s.last_layers == k
            assert rel_err(s.epistemic_last_layers, p2 * last) <= 1e-8
            emb = torch.tensor([r[2] for r in ref], dtype=torch.float64)
            assert rel_err(s.embedding_grad, emb) <= 1e-8
            for g, v in s.by_layer.items():
                ref_g = torch.tensor([sum(x for nm, x in r[1].items() if layer_group(nm) == g)
                                      for r in ref], dtype=torch.float64)
                assert rel_err(v, p2 * ref_g) <= 1e-8, g
            assert rel_err(sum(s.by_layer.values()), s.epistemic) <= 1e-12


def test_last_layers_is_a_strict_part_when_k_is_small(tok):
    model = tiny_model("llama")
    prompts = [qa_prompt(tok, q) for q in QUESTIONS]
    one = score(model, tok, prompts, ANSWERS, method="auto", last_layers=1)
    assert (one.epistemic_last_layers > 0).all()
    assert (one.epistemic_last_layers < one.epistemic).all()
    torch.testing.assert_close(one.epistemic_last_layers, one.by_layer["block.1"])
    assert last_blocks(model, 1) == ["block.1"] and last_blocks(model, 9) == ["block.0", "block.1"]


def test_embedding_grad_needs_the_embedding_in_the_selection(tok):
    model = tiny_model("llama")
    prompts = [qa_prompt(tok, q) for q in QUESTIONS[:2]]
    sel = [n for n, _ in model.named_parameters() if "embed" not in n]
    for method in ("loop", "auto"):
        s = score(model, tok, prompts, ANSWERS[:2], method=method, params=sel)
        assert s.embedding_grad is None
        assert "embed" not in s.by_layer


def test_hooks_removed_and_state_restored(tok):
    model = tiny_model("gpt2")
    emb = model.get_input_embeddings()
    before = (len(emb._forward_hooks), len(model._forward_hooks))
    s = score(model, tok, ["<s>q"], ["ab"], method="auto", trace=True)
    assert s.embedding_grad is not None
    assert (len(emb._forward_hooks), len(model._forward_hooks)) == before
    assert all(p.grad is None for p in model.parameters())


def test_errors(tok):
    model = tiny_model("gpt2")
    with pytest.raises(ValueError, match="last_layers must be >= 1, got 0"):
        score(model, tok, ["a"], ["b"], last_layers=0)


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
@pytest.mark.parametrize("rule", ["weight-variance", "fan-in"])
def test_layer_scaled_is_the_blockdiag_quadratic_form(kind, rule, tok):
    """epistemic_layer_scaled = gᵀΣg with Σ = σ²·blockdiag(s_l I) written out as its diagonal,
    g = ∇θ p flattened over all parameters, from a brute-force gradient per pair."""
    model = tiny_model(kind)
    prompts = [qa_prompt(tok, q) for q in QUESTIONS]
    named = dict(model.named_parameters())
    scales = layer_variances(model, rule=rule)
    sigma2 = 0.7
    diag = torch.cat([torch.full((t.numel(),), sigma2 * scales[n], dtype=torch.float64)
                      for n, t in named.items()])
    ref = []
    for prompt, ans in zip(prompts, ANSWERS):
        p_ids = encode_prompt(tok, prompt)
        ids = torch.tensor([p_ids + encode_answer(tok, prompt, ans)])
        lp = _pair_log_p(model, ids, len(p_ids))
        # g = p·∇log p: HF's Llama RMSNorm runs in float32 even in a float64 model, so autograd
        # on p itself would differ from it by float32 rounding (see test_trace)
        g = lp.exp().detach() * torch.cat(
            [x.reshape(-1) for x in torch.autograd.grad(lp, list(named.values()))]).double()
        ref.append(float(g @ (diag * g)))
    ref_t = torch.tensor(ref, dtype=torch.float64)
    for method in ("loop", "auto"):
        s = score(model, tok, prompts, ANSWERS, method=method, batch_size=3, sigma2=sigma2,
                  covariance="layer-scaled", layer_scale=rule)
        assert s.covariance == "layer-scaled" and s.layer_scale == rule
        assert rel_err(s.epistemic_layer_scaled, ref_t) <= 1e-8
        torch.testing.assert_close(s.epistemic, s.epistemic_layer_scaled)
        torch.testing.assert_close(s.total, s.epistemic_layer_scaled + s.aleatoric)
        iso = score(model, tok, prompts, ANSWERS, method=method, batch_size=3, sigma2=sigma2,
                    layer_scale=rule)
        assert iso.covariance == "isotropic"
        torch.testing.assert_close(iso.epistemic, iso.epistemic_isotropic)
        torch.testing.assert_close(iso.epistemic_layer_scaled, s.epistemic_layer_scaled)
        torch.testing.assert_close(s.epistemic_isotropic, iso.epistemic_isotropic)
    # the scales differ from 1, so the two covariances rank differently in general
    assert rel_err(s.epistemic_layer_scaled, s.epistemic_isotropic) > 1e-3


def test_layer_scales_follow_in_place_weight_changes(tok):
    model = tiny_model("llama")
    prompts = [qa_prompt(tok, q) for q in QUESTIONS[:2]]
    a = score(model, tok, prompts, ANSWERS[:2], covariance="layer-scaled")
    with torch.no_grad():
        model.model.layers[0].mlp.up_proj.weight.mul_(3.0)  # its variance x9: the scales move
    b = score(model, tok, prompts, ANSWERS[:2], covariance="layer-scaled")
    fresh = layer_variances(model)
    assert fresh["model.layers.0.mlp.up_proj.weight"] > 5 * fresh["model.layers.1.mlp.up_proj.weight"]
    fresh_model = copy.deepcopy(model)  # another module: nothing cached for it
    ref = score(fresh_model, tok, prompts, ANSWERS[:2], covariance="layer-scaled")
    assert rel_err(b.epistemic_layer_scaled, ref.epistemic_layer_scaled) <= 1e-9
    assert rel_err(a.epistemic_layer_scaled, b.epistemic_layer_scaled) > 1e-3


def test_covariance_errors(tok):
    model = tiny_model("gpt2")
    with pytest.raises(ValueError, match="'isotropic', 'layer-scaled'"):
        score(model, tok, ["a"], ["b"], covariance="dense")
    with pytest.raises(ValueError, match="'weight-variance', 'fan-in'"):
        score(model, tok, ["a"], ["b"], layer_scale="ones")
