"""The reference engine against an independent brute force, and the front door's contract."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.func import functional_call, jacrev

import isograd
from isograd import Method, NonFiniteOutputWarning, sq_grad_norms
from tests.problems import (
    PROBLEMS,
    SEQS,
    brute_force,
    lm_logprob,
    padded_batch,
    rel_err,
    tiny_gpt2,
)

IDS = [p.id for p in PROBLEMS]


@pytest.mark.parametrize("problem", PROBLEMS, ids=IDS)
def test_loop_matches_brute_force_float64(problem):
    model = problem.build_model(torch.float64)
    batch = problem.build_batch(torch.float64)
    ref_total, ref_per = brute_force(model, problem.fn, batch)
    total, per = sq_grad_norms(model, problem.fn, batch, method="loop", by_param=True)
    assert total.dtype == torch.float64 and total.shape == ref_total.shape
    assert (ref_total > 0).all()
    assert rel_err(total, ref_total) <= 1e-8
    assert set(per) == set(ref_per)
    for name in per:
        torch.testing.assert_close(per[name], ref_per[name], rtol=1e-8, atol=1e-14)
    torch.testing.assert_close(sum(per.values()), total, rtol=1e-12, atol=0)


@pytest.mark.parametrize("problem", PROBLEMS, ids=IDS)
def test_loop_float32_within_1e_4_of_float64_brute_force(problem):
    ref_total, _ = brute_force(
        problem.build_model(torch.float64), problem.fn, problem.build_batch(torch.float64)
    )
    total = sq_grad_norms(
        problem.build_model(torch.float32), problem.fn, problem.build_batch(torch.float32)
    )
    assert total.dtype == torch.float64
    assert rel_err(total, ref_total) <= 1e-4


def test_tied_embedding_norm_is_norm_of_summed_uses():
    """With tying, the per-example gradient is g_emb + g_head: cross term included."""
    model = tiny_gpt2().double()
    batch = padded_batch("right")
    tied = sq_grad_norms(model, lm_logprob, batch)
    untied = copy.deepcopy(model)
    untied.lm_head.weight = nn.Parameter(untied.transformer.wte.weight.detach().clone())
    untied.eval()
    params = {n: p.detach() for n, p in untied.named_parameters()}
    jac = jacrev(lambda ps: lm_logprob(lambda **k: functional_call(untied, ps, (), k), batch))(
        params
    )
    b = batch["input_ids"].shape[0]
    j_emb = jac["transformer.wte.weight"].reshape(b, -1)
    j_head = jac["lm_head.weight"].reshape(b, -1)
    rest = sum(
        j.reshape(b, -1).square().sum(1)
        for n, j in jac.items()
        if n not in ("transformer.wte.weight", "lm_head.weight")
    )
    summed = (j_emb + j_head).square().sum(1) + rest
    separate = j_emb.square().sum(1) + j_head.square().sum(1) + rest
    torch.testing.assert_close(tied, summed, rtol=1e-10, atol=0)
    assert (tied - separate).abs().max() > 1e-6 * separate.abs().max()


@pytest.mark.parametrize("build", ["gpt2", "llama"])
def test_padding_left_right_equal_each_example_alone(build):
    problem = next(p for p in PROBLEMS if p.id.startswith(build) and p.id.endswith("right-pad"))
    model = problem.build_model(torch.float64)
    right = sq_grad_norms(model, lm_logprob, padded_batch("right"))
    left = sq_grad_norms(model, lm_logprob, padded_batch("left"))
    alone = torch.cat([sq_grad_norms(model, lm_logprob, padded_batch("right", [s])) for s in SEQS])
    torch.testing.assert_close(right, alone, rtol=1e-10, atol=0)
    torch.testing.assert_close(left, alone, rtol=1e-10, atol=0)


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.5), nn.Tanh(), nn.Linear(4, 2)).double()


def _fn(model, x):
    return model(x).log_softmax(1)[:, 0]


X = torch.randn(5, 3, dtype=torch.float64)


def test_param_selection_by_names_predicate_and_tensors():
    model = _mlp()
    total, per = sq_grad_norms(model, _fn, X, by_param=True)
    by_name = sq_grad_norms(model, _fn, X, params=["0.weight", "3.bias"])
    by_pred = sq_grad_norms(model, _fn, X, params=lambda n, p: n in ("0.weight", "3.bias"))
    by_tensor = sq_grad_norms(model, _fn, X, params=[model[0].weight, model[3].bias])
    expected = per["0.weight"] + per["3.bias"]
    for got in (by_name, by_pred, by_tensor):
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=0)
    assert (total > expected).all()


def test_frozen_model_still_covers_every_parameter():
    model = _mlp()
    ref = sq_grad_norms(model, _fn, X)
    for p in model.parameters():
        p.requires_grad_(False)
    torch.testing.assert_close(sq_grad_norms(model, _fn, X), ref)
    assert not any(p.requires_grad for p in model.parameters())


def test_tied_alias_name_selects_the_shared_tensor():
    model = tiny_gpt2().double()
    a = sq_grad_norms(model, lm_logprob, padded_batch(), params=["lm_head.weight"])
    b = sq_grad_norms(model, lm_logprob, padded_batch(), params=["transformer.wte.weight"])
    torch.testing.assert_close(a, b)


def _snapshot(model: nn.Module):
    return (
        [m.training for m in model.modules()],
        [(p.requires_grad, None if p.grad is None else p.grad.clone()) for p in model.parameters()],
        [
            (list(m._forward_hooks), list(m._forward_pre_hooks), list(m._backward_hooks),
             list(m._backward_pre_hooks))
            for m in model.modules()
        ],
        [(len(p._post_accumulate_grad_hooks or {}), len(p._backward_hooks or {}))
         for p in model.parameters()],
        {k: v.clone() for k, v in model.state_dict().items()},
    )


def _assert_same(a, b):
    assert a[0] == b[0]
    assert len(a[1]) == len(b[1])
    for (fa, ga), (fb, gb) in zip(a[1], b[1]):
        assert fa == fb
        assert (ga is None) == (gb is None)
        if ga is not None:
            assert torch.equal(ga, gb)
    assert a[2] == b[2] and a[3] == b[3]
    assert a[4].keys() == b[4].keys() and all(torch.equal(a[4][k], b[4][k]) for k in a[4])


def _dressed_model() -> nn.Module:
    """Train mode, a user hook, a partial .grad, mixed requires_grad flags."""
    model = _mlp().train()
    model[0].register_forward_hook(lambda m, i, o: None)
    model[3].weight.register_hook(lambda g: g)
    model[3].weight.grad = torch.ones_like(model[3].weight)
    model[0].bias.requires_grad_(False)
    return model


@pytest.mark.parametrize("method", ["loop"])
def test_model_untouched_after_success(method):
    model = _dressed_model()
    before = _snapshot(model)
    seen_training = []

    def fn(m, x):
        seen_training.append(any(mod.training for mod in m.modules()))
        return _fn(m, x)

    out1 = sq_grad_norms(model, fn, X, method=method)
    out2 = sq_grad_norms(model, fn, X, method=method)
    _assert_same(before, _snapshot(model))
    assert seen_training == [False, False]  # eval semantics: dropout off, so deterministic
    torch.testing.assert_close(out1, out2, rtol=0, atol=0)
    assert model.training


@pytest.mark.parametrize(
    "bad_fn,error",
    [
        (lambda m, x: (_ for _ in ()).throw(RuntimeError("boom")), RuntimeError),
        (lambda m, x: m(x), ValueError),  # [B, 2], not [B]
        (lambda m, x: _fn(m, x).detach(), ValueError),
        (lambda m, x: _fn(m, x)[:3], ValueError),
        (lambda m, x: 1.0, TypeError),
    ],
    ids=["raises", "wrong-shape", "detached", "wrong-length", "not-a-tensor"],
)
def test_model_untouched_after_error(bad_fn, error):
    model = _dressed_model()
    before = _snapshot(model)
    with pytest.raises(error):
        sq_grad_norms(model, bad_fn, X)
    _assert_same(before, _snapshot(model))


def test_error_fails_inside_backward_restores_state():
    model = _dressed_model()
    before = _snapshot(model)

    class Boom(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x.clone()

        @staticmethod
        def backward(ctx, g):
            raise RuntimeError("backward failed")

    with pytest.raises(RuntimeError, match="backward failed"):
        sq_grad_norms(model, lambda m, x: Boom.apply(_fn(m, x)), X)
    _assert_same(before, _snapshot(model))


def test_clear_errors_on_bad_input():
    model = _mlp()
    with pytest.raises(ValueError, match="empty"):
        sq_grad_norms(model, _fn, X[:0])
    with pytest.raises(ValueError, match="empty"):
        sq_grad_norms(model, _fn, X, params=lambda n, p: False)
    with pytest.raises(ValueError, match="unknown parameter"):
        sq_grad_norms(model, _fn, X, params=["nope.weight"])
    with pytest.raises(ValueError, match="not parameters of the model"):
        sq_grad_norms(model, _fn, X, params=[torch.zeros(2, requires_grad=True)])
    with pytest.raises(ValueError, match="'loop', 'ghost', 'auto'"):
        sq_grad_norms(model, _fn, X, method="fast")
    with pytest.raises(ValueError, match=r"shape \[5\]"):
        sq_grad_norms(model, lambda m, x: m(x), X)
    with pytest.raises(ValueError, match="not differentiable"):
        sq_grad_norms(model, lambda m, x: _fn(m, x).detach(), X)


def test_non_finite_example_reported_others_exact():
    model = _mlp()
    ref = sq_grad_norms(model, _fn, X)

    def fn(m, x):
        out = _fn(m, x)
        poison = torch.zeros_like(out)
        poison[1] = float("nan")
        poison[3] = float("inf")
        return out + poison

    with pytest.warns(NonFiniteOutputWarning, match=r"\[1, 3\]"):
        got = sq_grad_norms(model, fn, X)
    assert torch.isnan(got[[1, 3]]).all()
    keep = [0, 2, 4]
    torch.testing.assert_close(got[keep], ref[keep], rtol=0, atol=0)


def test_method_enum_values_and_docs():
    assert {m.value for m in Method} == {"loop", "ghost", "auto"}
    assert isograd.sq_grad_norms is sq_grad_norms
    assert Method.parse("loop") is Method.LOOP
